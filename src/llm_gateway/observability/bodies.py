"""Message contents for Langfuse, only with ``observability.log_bodies``.

The bytes a ``/v1`` request and its answer carried are kept (up to a bound)
while the request runs and turned into a trace's input and output after
it: the messages sent, and the answer's message(s) — streamed answers
re-assembled from their SSE chunks.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_BYTES = 1 << 20  # per direction; past this the contents are not kept
TRUNCATED = "[not kept: larger than 1 MiB]"


class BodyCapture:
    """The bytes of one request and its response, up to ``MAX_BYTES`` each."""

    __slots__ = ("event_stream", "request", "request_size", "response", "response_size")

    def __init__(self) -> None:
        self.request: list[bytes] = []
        self.request_size = 0
        self.response: list[bytes] = []
        self.response_size = 0
        self.event_stream = False

    @property
    def size(self) -> int:
        """Bytes held."""
        return min(self.request_size, MAX_BYTES) + min(self.response_size, MAX_BYTES)

    def add_request(self, chunk: bytes) -> None:
        self.request_size += len(chunk)
        if self.request_size <= MAX_BYTES:
            self.request.append(chunk)

    def add_response(self, chunk: bytes) -> None:
        self.response_size += len(chunk)
        if self.response_size <= MAX_BYTES:
            self.response.append(chunk)

    def input(self, endpoint: str) -> Any:
        if self.request_size > MAX_BYTES:
            return TRUNCATED
        try:
            data = orjson.loads(b"".join(self.request))
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        if endpoint == "embeddings":
            return data.get("input")
        return {k: data[k] for k in ("system", "messages", "tools") if k in data} or None

    def output(self, endpoint: str) -> Any:
        if self.response_size > MAX_BYTES:
            return TRUNCATED
        body = b"".join(self.response)
        if self.event_stream:
            return _assemble_messages_stream(body) if endpoint == "messages" else _assemble_stream(body)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        if "error" in data:
            return {"error": data["error"]}
        if endpoint == "embeddings":
            return {"embeddings": len(data.get("data") or [])}
        if endpoint == "messages":
            return {"role": "assistant", "content": data.get("content")}
        messages = [c.get("message") for c in data.get("choices") or [] if isinstance(c, dict)]
        return messages[0] if len(messages) == 1 else messages


def _assemble_stream(body: bytes) -> Any:
    """The answer an OpenAI SSE stream spelled out: per choice, the text and
    tool calls its deltas add up to (or the error event that ended it)."""
    choices: dict[int, dict[str, Any]] = {}
    for event in body.split(b"\n\n"):
        if not event.startswith(b"data: ") or event == b"data: [DONE]":
            continue
        try:
            chunk = orjson.loads(event[6:])
        except orjson.JSONDecodeError:
            continue
        if not isinstance(chunk, dict):
            continue
        if "error" in chunk:
            return {"error": chunk["error"]}
        for c in chunk.get("choices") or []:
            delta = c.get("delta") or {}
            message = choices.setdefault(int(c.get("index") or 0), {"role": "assistant", "content": ""})
            if delta.get("content"):
                message["content"] += delta["content"]
            for call in delta.get("tool_calls") or []:
                calls = message.setdefault("tool_calls", {})
                slot = calls.setdefault(int(call.get("index") or 0), {"name": "", "arguments": ""})
                function = call.get("function") or {}
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
    messages = []
    for _, message in sorted(choices.items()):
        if "tool_calls" in message:
            message["tool_calls"] = [v for _, v in sorted(message["tool_calls"].items())]
        messages.append(message)
    return messages[0] if len(messages) == 1 else messages


def _assemble_messages_stream(body: bytes) -> Any:
    """The answer an Anthropic SSE stream spelled out: its content blocks,
    text and tool calls (or the error event that ended it)."""
    blocks: dict[int, dict[str, Any]] = {}
    for event in body.split(b"\n\n"):
        _, _, data = event.partition(b"data: ")
        try:
            item = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(item, dict):
            continue
        if item.get("type") == "error":
            return {"error": item.get("error")}
        index = int(item.get("index") or 0)
        if item.get("type") == "content_block_start":
            blocks[index] = dict(item.get("content_block") or {})
        elif item.get("type") == "content_block_delta" and index in blocks:
            delta = item.get("delta") or {}
            if delta.get("type") == "text_delta":
                blocks[index]["text"] = blocks[index].get("text", "") + delta.get("text", "")
            elif delta.get("type") == "input_json_delta":
                blocks[index]["partial_json"] = blocks[index].get("partial_json", "") + delta.get("partial_json", "")
    content = []
    for _, block in sorted(blocks.items()):
        if "partial_json" in block:
            try:
                block["input"] = orjson.loads(block.pop("partial_json"))
            except orjson.JSONDecodeError:
                pass
        content.append(block)
    return {"role": "assistant", "content": content}
