"""Canonical requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from llm_gateway.types.messages import Message


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


@dataclass(slots=True)
class ToolChoice:
    """``auto`` | ``none`` | ``required`` | ``named`` (then ``name`` is set)."""

    mode: Literal["auto", "none", "required", "named"]
    name: str | None = None


@dataclass(slots=True)
class ResponseFormat:
    """``text`` | ``json_object`` | ``json_schema`` (then ``schema`` is set)."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


# The client dialects a request may arrive in (``wire/``'s ingress packages).
Dialect = Literal["openai.chat", "openai.responses", "anthropic.messages"]
# The response cache's namespace for each dialect's bodies.
_CACHE_NAMESPACES: dict[str, str] = {
    "openai.chat": "chat", "openai.responses": "responses", "anthropic.messages": "messages",
}


@dataclass(slots=True)
class Origin:
    """The client's own request, in the dialect it arrived in: every
    dialect's pass-through extras in one place, off the canonical fields.

    A provider that speaks ``dialect`` receives ``body`` with only ``model``
    replaced (and ``headers``, such as ``anthropic-beta``); any other gets
    the canonical request. ``only`` is (param, message) of the first thing
    in ``body`` that only a provider speaking the dialect can take: any
    other refuses the request with it. ``uncarried_bytes`` counts the body's
    content the canonical messages do not carry but such a provider reads
    (added to the prompt's upper bound for the reservation)."""

    dialect: Dialect
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    only: tuple[str, str] | None = None
    uncarried_bytes: int = 0


@dataclass(slots=True)
class ChatRequest:
    """A chat request, independent of the dialect it arrived in.

    ``origin`` keeps the client's own body (see ``Origin``); ``extra`` keeps
    OpenAI chat fields the gateway does not interpret, so nothing the client
    sent is silently dropped when it is re-encoded for an OpenAI-format
    upstream.
    """

    model: str
    messages: list[Message]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    n: int | None = None
    user: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    # low | medium | high (… as the client named it): how hard a reasoning model thinks
    reasoning_effort: str | None = None
    origin: Origin | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def from_dialect(self, dialect: Dialect) -> dict[str, Any] | None:
        """The client's body when the request arrived in ``dialect``."""
        origin = self.origin
        return origin.body if origin is not None and origin.dialect == dialect else None

    @property
    def cache_source(self) -> tuple[str, dict[str, Any] | None]:
        """The cache's namespace and the body its key is computed from."""
        if self.origin is None:
            return "chat", None
        return _CACHE_NAMESPACES[self.origin.dialect], self.origin.body


@dataclass(slots=True)
class EmbeddingRequest:
    model: str
    inputs: list[str] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    raw: dict[str, Any] | None = None
