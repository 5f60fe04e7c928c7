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


@dataclass(slots=True)
class ChatRequest:
    """A chat completion request, independent of the dialect it arrived in.

    ``raw`` keeps the client's original OpenAI body so an OpenAI-format
    upstream can receive it with only ``model`` rewritten (passthrough).
    ``extra`` keeps fields the gateway does not interpret, so nothing the
    client sent is silently dropped on the passthrough path.
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
    raw: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # For a request that arrived in another dialect (``raw`` is None): the
    # client's fields that the response cache keys on.
    cache_basis: dict[str, Any] | None = None
    # The client's Anthropic Messages body, when it arrived in that dialect:
    # an ``anthropic`` provider receives it as is, with only ``model`` replaced.
    anthropic_body: dict[str, Any] | None = None
    # The client's ``anthropic-beta`` header, forwarded with that body.
    anthropic_beta: str | None = None
    # (param, message) of the first thing in that body only an Anthropic
    # deployment can take; any other refuses the request with it.
    anthropic_only: tuple[str, str] | None = None
    # Bytes of that body's content the canonical messages do not carry
    # (documents, earlier thinking, …) but an Anthropic deployment reads:
    # added to the prompt's upper bound for the reservation.
    uncarried_bytes: int = 0

    @property
    def cache_source(self) -> tuple[str, dict[str, Any] | None]:
        """The cache's namespace and the body its key is computed from."""
        if self.raw is not None:
            return "chat", self.raw
        return "messages", self.cache_basis


@dataclass(slots=True)
class EmbeddingRequest:
    model: str
    inputs: list[str] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    raw: dict[str, Any] | None = None
