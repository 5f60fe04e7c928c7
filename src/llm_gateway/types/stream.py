"""Canonical stream events, produced by per-request provider stream decoders
and encoded by the ingress dialect as they arrive."""

from __future__ import annotations

from dataclasses import dataclass

from llm_gateway.types.response import FinishReason, Usage


@dataclass(slots=True)
class TextDelta:
    text: str
    index: int = 0


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call. The first piece for ``tool_index`` carries
    ``id`` and ``name``; later pieces carry argument text only."""

    tool_index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None
    index: int = 0


@dataclass(slots=True)
class FinishDelta:
    reason: FinishReason
    index: int = 0


@dataclass(slots=True)
class UsageDelta:
    usage: Usage


StreamEvent = TextDelta | ToolCallDelta | FinishDelta | UsageDelta
