"""Canonical responses and usage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llm_gateway.types.messages import ToolCall

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(slots=True)
class Usage:
    """Token counts. ``input_tokens`` includes ``cached_input_tokens``;
    ``output_tokens`` includes ``reasoning_tokens`` (SPEC §8, usage mapping)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


@dataclass(slots=True)
class Choice:
    index: int
    text: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason | None = "stop"
    refusal: str | None = None


@dataclass(slots=True)
class ChatResponse:
    id: str
    model: str
    created: int
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


@dataclass(slots=True)
class EmbeddingResponse:
    model: str
    vectors: list[list[float]] | list[str]  # floats, or base64 strings when asked
    usage: Usage
