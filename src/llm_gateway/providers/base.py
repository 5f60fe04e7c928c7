"""The small protocol every provider adapter implements.

An adapter turns canonical requests into one provider's HTTP calls and the
answers back into canonical results. Translation lives in pure functions next
to the adapter; the adapter itself only sends bytes and maps errors, once, at
this boundary.

Passthrough: when a chat request arrived in OpenAI's dialect (``req.raw`` is
set) and the provider speaks OpenAI's format, the adapter may answer with
``RawChat`` / ``RawChunk`` (the upstream's own bytes) instead of canonical
objects, so nothing is re-serialised; it still reports usage. Likewise an
Anthropic-dialect request (``req.anthropic_body``) to an Anthropic provider
is answered with ``RawMessage`` / ``RawEvent``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from llm_gateway.types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, StreamEvent, Usage


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


@dataclass(slots=True)
class RawChat:
    """An OpenAI-format chat completion body, passed through unchanged."""

    body: bytes
    usage: Usage | None


@dataclass(slots=True)
class RawChunk:
    """One OpenAI-format ``chat.completion.chunk`` JSON payload (without the
    ``data: `` framing), passed through unchanged. ``usage`` is set on the
    chunk that carried it; ``data`` is ``None`` when that chunk is not for the
    client (it did not ask for ``include_usage``)."""

    data: bytes | None
    usage: Usage | None = None


@dataclass(slots=True)
class RawMessage:
    """An Anthropic Messages ``message`` body, passed through unchanged."""

    body: bytes
    usage: Usage | None


@dataclass(slots=True)
class RawEvent:
    """One Anthropic Messages SSE event, framed (``event: …\\ndata: …\\n\\n``)
    and passed through unchanged, with the canonical events it amounts to
    (for usage, the cache and the token estimate)."""

    frame: bytes
    events: list[StreamEvent]


@dataclass(slots=True)
class RawEmbedding:
    body: bytes
    usage: Usage | None


ChatResult = ChatResponse | RawChat | RawMessage
ChunkOrEvent = StreamEvent | RawChunk | RawEvent
EmbeddingResult = EmbeddingResponse | RawEmbedding


class Provider(Protocol):
    """One configured upstream (an entry of ``providers:``)."""

    name: str
    kind: str

    async def start(self) -> None:
        """Open pooled connections; called once from the app's lifespan."""

    async def aclose(self) -> None:
        """Close pooled connections; called once at shutdown."""

    async def chat(self, req: ChatRequest, target: Target, request_id: str) -> ChatResult:
        """One non-streaming completion from ``target.model``."""

    async def chat_stream(self, req: ChatRequest, target: Target, request_id: str) -> AsyncIterator[ChunkOrEvent]:
        """Open a stream. Raises ``GatewayError`` before yielding when the
        upstream refuses; the iterator then yields events as they arrive.
        Closing the iterator cancels the upstream request."""

    async def embed(self, req: EmbeddingRequest, target: Target, request_id: str) -> EmbeddingResult:
        """Embeddings from ``target.model``."""
