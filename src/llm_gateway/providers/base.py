"""The small protocol every provider adapter implements.

An adapter turns canonical requests into one provider's HTTP calls and the
answers back into canonical results. Translation lives in pure functions next
to the adapter; the adapter itself only sends bytes and maps errors, once, at
this boundary.

Passthrough: when a request arrived in a dialect the provider speaks
(``passes_through``: OpenAI chat or responses to an OpenAI deployment,
Anthropic messages to an Anthropic one), the adapter sends the client's own
body (``req.origin``) and answers with the upstream's own bytes in an
``Answer`` / ``Piece`` (``wire.answer``), so nothing is re-serialised; it
still reports usage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from llm_gateway.types import ChatRequest, Dialect, EmbeddingRequest
from llm_gateway.wire.answer import Answer, EmbeddingAnswer, Piece


@dataclass(slots=True, frozen=True)
class Timeouts:
    """One attempt's time limits in seconds, as a model overrides its
    provider's; ``None`` leaves the provider's own."""

    total: float | None = None
    connect: float | None = None
    first_byte: float | None = None
    idle: float | None = None


# The request's deadline (the event loop's clock), set by the router for the
# request's task. The router bounds each attempt up to its answer (or a
# stream's first event) itself; this is for what outlives the attempt: the
# watchdog of a stream already flowing to the client. A context variable
# rather than a parameter, so no adapter has to pass it along.
REQUEST_DEADLINE: ContextVar[float | None] = ContextVar("request_deadline", default=None)


@dataclass(slots=True, frozen=True)
class Target:
    """What an adapter needs to know about the deployment it calls."""

    model: str  # the upstream model name
    max_output_tokens: int  # sent where the upstream API requires a max_tokens
    timeouts: Timeouts | None = None  # the model's overrides of the provider's timeouts


# The client dialects each provider kind takes as they are (passthrough):
# a request that arrived in one of them goes up as the client's own body.
PASSTHROUGH: dict[str, frozenset[Dialect]] = {
    "openai": frozenset({"openai.chat", "openai.responses"}),
    "openai_compatible": frozenset({"openai.chat"}),
    "anthropic": frozenset({"anthropic.messages"}),
}


def passes_through(kind: str, req: ChatRequest) -> bool:
    """Whether a provider of ``kind`` gets ``req`` as the client's own body."""
    return req.origin is not None and req.origin.dialect in PASSTHROUGH.get(kind, frozenset())


class Provider(Protocol):
    """One configured upstream (an entry of ``providers:``)."""

    name: str
    kind: str

    async def start(self) -> None:
        """Open pooled connections; called once from the app's lifespan."""

    async def aclose(self) -> None:
        """Close pooled connections; called once at shutdown."""

    async def chat(self, req: ChatRequest, target: Target, request_id: str) -> Answer:
        """One non-streaming completion from ``target.model``."""

    async def chat_stream(self, req: ChatRequest, target: Target, request_id: str) -> AsyncIterator[Piece]:
        """Open a stream. Raises ``GatewayError`` before yielding when the
        upstream refuses; the iterator then yields events as they arrive.
        Closing the iterator cancels the upstream request."""

    async def embed(self, req: EmbeddingRequest, target: Target, request_id: str) -> EmbeddingAnswer:
        """Embeddings from ``target.model``."""
