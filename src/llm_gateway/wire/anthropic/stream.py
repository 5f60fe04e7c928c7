"""Anthropic Messages SSE events → canonical stream events.

One ``StreamDecoder`` per request holds what the events leave implicit: which
content block is text and which is the n-th tool call, the usage counted so
far, and whether ``message_stop`` arrived. The event sequence is::

    message_start, (content_block_start, content_block_delta*, content_block_stop)*,
    message_delta, message_stop

with ``ping`` anywhere and ``error`` possibly in place of the rest. Unknown
events and block types (thinking, signatures, server tools) are ignored, as
the API's versioning policy asks of clients.
"""

from __future__ import annotations

from typing import Any

import orjson

from llm_gateway.errors import UpstreamError
from llm_gateway.types import FinishDelta, StreamEvent, TextDelta, ToolCallDelta, UsageDelta
from llm_gateway.wire.anthropic.from_wire import finish_reason, stream_error, usage

_TEXT = -1  # block kind markers; tool blocks are keyed by their tool index (>= 0)
_JSON = -2


class StreamDecoder:
    """Decodes one Anthropic stream. ``feed`` each event's parsed JSON in order,
    then call ``close`` when the body ends."""

    def __init__(self, provider: str, json_tool: str | None = None) -> None:
        self.provider = provider
        self.json_tool = json_tool
        self.message_id: str | None = None
        self.model: str | None = None
        self.done = False
        self._blocks: dict[int, int] = {}  # content block index → _TEXT, _JSON or tool index
        self._tools = 0
        self._usage: dict[str, Any] = {}
        self._finished = False

    def feed(self, data: Any) -> list[StreamEvent]:
        """Canonical events for one SSE event's JSON; raises the mapped error
        for an ``error`` event."""
        if not isinstance(data, dict):
            return []
        kind = data.get("type")
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "content_block_start":
            return self._start(data)
        if kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                self.message_id = message.get("id")
                self.model = message.get("model")
                self._add_usage(message.get("usage"))
            return []
        if kind == "message_delta":
            self._add_usage(data.get("usage"))
            delta = data.get("delta")
            stop = delta.get("stop_reason") if isinstance(delta, dict) else None
            if stop is None:
                return []
            self._finished = True
            return [FinishDelta(finish_reason(stop, json_mode=self.json_tool is not None))]
        if kind == "message_stop":
            self.done = True
            events: list[StreamEvent] = [] if self._finished else [FinishDelta("stop")]
            self._finished = True
            events.append(UsageDelta(usage(self._usage)))
            return events
        if kind == "error":
            raise stream_error(data, self.provider)
        return []  # ping, content_block_stop, and event types added later

    def close(self) -> None:
        """The body ended: fail unless ``message_stop`` was seen."""
        if not self.done:
            raise UpstreamError(f"The {self.provider} provider ended the stream early.")

    def _add_usage(self, data: Any) -> None:
        # message_delta counts are cumulative, so later values replace earlier ones.
        if isinstance(data, dict):
            self._usage.update({k: v for k, v in data.items() if v is not None})

    def _start(self, data: Any) -> list[StreamEvent]:
        block = data.get("content_block")
        index = data.get("index")
        if not isinstance(block, dict) or not isinstance(index, int):
            return []
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = _TEXT
            text = block.get("text")
            return [TextDelta(text)] if isinstance(text, str) and text else []
        if kind != "tool_use":
            return []
        initial = block.get("input")
        arguments = orjson.dumps(initial).decode() if isinstance(initial, dict) and initial else ""
        if self.json_tool is not None and block.get("name") == self.json_tool:
            self._blocks[index] = _JSON
            return [TextDelta(arguments)] if arguments else []
        tool_index = self._tools
        self._tools += 1
        self._blocks[index] = tool_index
        call_id, name = str(block.get("id", "")), str(block.get("name", ""))
        return [ToolCallDelta(tool_index, arguments, id=call_id, name=name)]

    def _delta(self, data: Any) -> list[StreamEvent]:
        delta = data.get("delta")
        index = data.get("index")
        target = self._blocks.get(index) if isinstance(index, int) else None
        if not isinstance(delta, dict) or target is None:
            return []
        kind = delta.get("type")
        if kind == "text_delta" and target == _TEXT:
            text = delta.get("text")
            return [TextDelta(text)] if isinstance(text, str) and text else []
        if kind == "input_json_delta" and target != _TEXT:
            partial = delta.get("partial_json")
            if not isinstance(partial, str) or not partial:
                return []
            return [TextDelta(partial)] if target == _JSON else [ToolCallDelta(target, partial)]
        return []  # thinking_delta, signature_delta, citations_delta, …
