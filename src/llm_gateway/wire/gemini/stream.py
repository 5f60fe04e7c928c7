"""Per-request decoder of a streamGenerateContent (``alt=sse``) stream.

Each SSE event is a whole GenerateContentResponse: text arrives in pieces,
a function call arrives whole in one part, ``finishReason`` and the final
``usageMetadata`` come with the last event, and there is no terminator event.
Usage is cumulative per event, so only the last one is reported, once, when
the stream ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm_gateway.errors import UpstreamError
from llm_gateway.types import FinishDelta, StreamEvent, TextDelta, ToolCallDelta, Usage, UsageDelta
from llm_gateway.wire.gemini import from_wire


@dataclass(slots=True)
class _Candidate:
    tools: int = 0  # tool calls emitted so far
    finished: bool = False


class StreamDecoder:
    """Turns parsed stream events into canonical events. One per request."""

    def __init__(self, provider: str = "gemini") -> None:
        self._provider = provider
        self._candidates: dict[int, _Candidate] = {}
        self._usage: Usage | None = None

    @property
    def finished(self) -> bool:
        """Every candidate seen so far has finished (and there was one)."""
        return bool(self._candidates) and all(c.finished for c in self._candidates.values())

    def feed(self, data: Any) -> list[StreamEvent]:
        """Canonical events of one parsed SSE ``data`` payload."""
        if not isinstance(data, dict):
            raise UpstreamError(f"The {self._provider} provider sent an unexpected stream event.")
        self._usage = from_wire.usage(data.get("usageMetadata")) or self._usage
        candidates = data.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            if from_wire.prompt_blocked(data) and not self._candidates:
                self._candidates[0] = _Candidate(finished=True)
                return [FinishDelta("content_filter", 0)]
            return []
        events: list[StreamEvent] = []
        for position, candidate in enumerate(candidates):
            if isinstance(candidate, dict):
                events.extend(self._candidate(candidate, position))
        return events

    def _candidate(self, candidate: dict[str, Any], position: int) -> list[StreamEvent]:
        raw_index = candidate.get("index")
        index = raw_index if isinstance(raw_index, int) else position
        state = self._candidates.setdefault(index, _Candidate())
        if state.finished:
            return []
        events: list[StreamEvent] = []
        for part in from_wire.candidate_parts(candidate):
            text = from_wire.part_text(part)
            if text:
                events.append(TextDelta(text, index))
            elif (call := from_wire.part_call(part)) is not None:
                events.append(ToolCallDelta(state.tools, call.arguments, call.id, call.name, index))
                state.tools += 1
        raw = candidate.get("finishReason")
        if isinstance(raw, str) and raw != "FINISH_REASON_UNSPECIFIED":
            state.finished = True
            events.append(FinishDelta(from_wire.finish_reason(raw, state.tools > 0), index))
        return events

    def close(self) -> list[StreamEvent]:
        """The closing events once the upstream stream has ended: the usage.
        Raises ``UpstreamError`` when it ended before a finish reason."""
        if not self.finished:
            raise UpstreamError(f"The {self._provider} provider ended the stream early.")
        return [UsageDelta(self._usage)] if self._usage is not None else []
