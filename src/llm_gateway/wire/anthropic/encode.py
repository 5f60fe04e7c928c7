"""Canonical answers → the Anthropic Messages API's JSON and SSE.

Whatever model served it, a ``/v1/messages`` client gets a ``message``
object, or the event stream ``message_start``, ``content_block_start`` /
``_delta`` / ``_stop`` per block, ``message_delta`` (stop reason and usage),
``message_stop``. Usage follows Anthropic's split: ``input_tokens`` excludes
the cached tokens, reported as ``cache_read_input_tokens``. As an OpenAI-
format upstream reports usage only at the end of a stream, ``message_start``
carries zeros and the final ``message_delta`` carries all the counts (the
Anthropic SDKs take the counts of a ``message_delta`` over those of
``message_start``).

Answers kept by the response cache, and any other OpenAI-format body,
are read back into canonical form first. An Anthropic deployment's own
answer (passthrough) needs no encoding at all: the route sends its bytes.
"""

from __future__ import annotations

from typing import Any

import orjson

from llm_gateway.errors import GatewayError
from llm_gateway.types import (
    FinishDelta,
    FinishReason,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from llm_gateway.wire.answer import Answer, Piece

_STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal",
}

def message_id(upstream_id: str, request_id: str) -> str:
    return upstream_id if upstream_id.startswith("msg_") else f"msg_{request_id}"


def encode_usage(usage: Usage | None) -> dict[str, int]:
    usage = usage or Usage()
    return {
        "input_tokens": usage.input_tokens - usage.cached_input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
    }


def _tool_input(arguments: str) -> Any:
    """A tool call's arguments as the JSON object Anthropic's ``input`` is;
    text that is not one is kept whole under ``arguments``."""
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"arguments": arguments}


def encode_message(result: Answer, request_id: str, model: str) -> dict[str, Any]:
    """A non-streamed answer as a Messages API ``message`` (its first choice)."""
    resp = result.response
    content: list[dict[str, Any]] = []
    stop_reason = "end_turn"
    if resp.choices:
        choice = resp.choices[0]
        text = choice.text or choice.refusal
        if text:
            content.append({"type": "text", "text": text})
        content += [{"type": "tool_use", "id": t.id, "name": t.name, "input": _tool_input(t.arguments)}
                    for t in choice.tool_calls]
        stop_reason = _STOP_REASONS[choice.finish_reason or "stop"]
    return {
        "id": message_id(resp.id, request_id), "type": "message", "role": "assistant",
        "model": resp.model or model, "content": content, "stop_reason": stop_reason, "stop_sequence": None,
        "usage": encode_usage(resp.usage),
    }


# Anthropic's error types by HTTP status (SPEC §4): its SDKs and clients
# such as Claude Code read them to decide what went wrong and whether to retry.
_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
    502: "api_error", 503: "overloaded_error", 529: "overloaded_error", 504: "timeout_error",
}


def anthropic_error_type(status: int) -> str:
    """Anthropic's ``error.type`` for an HTTP status; another 4xx is an
    ``invalid_request_error``, another 5xx an ``api_error``."""
    return _ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")


def anthropic_error_body(err: GatewayError) -> bytes:
    """An error in Anthropic's shape, ``{"type": "error", "error": {"type",
    "message"}}``, with Anthropic's type for its status; the gateway's
    ``param`` and ``code`` are kept beside them. For every ``/v1/messages``
    answer, including those refused before the route runs."""
    body = err.to_openai()
    body["error"]["type"] = anthropic_error_type(err.status_code)
    return orjson.dumps({"type": "error", **body})


error_body = anthropic_error_body  # its earlier name, which api/guard.py imports


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessageStreamEncoder:
    """Canonical stream events (or cached OpenAI chunks) → Anthropic SSE.

    Only the first choice is streamed. Each text run and each tool call is a
    content block; a block is closed when another one starts. The stop
    reason and usage are held back to the final ``message_delta``, since an
    OpenAI-format upstream sends its usage after the finish reason."""

    def __init__(self, message_id: str, model: str) -> None:
        self.message_id = message_id
        self.model = model
        self.block = -1  # index of the open block, -1 before the first
        self.block_kind: str | None = None  # "text" or "tool_use" while one is open
        self.tools: dict[int, int] = {}  # the choice's tool index → its block index
        self.stop_reason = "end_turn"
        self.usage: Usage | None = None

    def start(self) -> bytes:
        message: dict[str, Any] = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None, "usage": encode_usage(None)}
        return _event(b"message_start", {"type": "message_start", "message": message})

    def encode(self, item: Piece) -> bytes:
        return b"".join(self._one(event) for event in item.events)

    def _close(self) -> bytes:
        if self.block_kind is None:
            return b""
        self.block_kind = None
        return _event(b"content_block_stop", {"type": "content_block_stop", "index": self.block})

    def _open(self, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.block += 1
        self.block_kind = block["type"]
        return out + _event(b"content_block_start",
                            {"type": "content_block_start", "index": self.block, "content_block": block})

    def _one(self, event: StreamEvent) -> bytes:
        if isinstance(event, UsageDelta):
            self.usage = event.usage
            return b""
        if event.index != 0:
            return b""
        if isinstance(event, TextDelta):
            out = b"" if self.block_kind == "text" else self._open({"type": "text", "text": ""})
            return out + _event(b"content_block_delta", {
                "type": "content_block_delta", "index": self.block,
                "delta": {"type": "text_delta", "text": event.text}})
        if isinstance(event, ToolCallDelta):
            out = b""
            if event.tool_index not in self.tools:
                out = self._open({"type": "tool_use", "id": event.id or f"toolu_{self.message_id}_{event.tool_index}",
                                  "name": event.name or "", "input": {}})
                self.tools[event.tool_index] = self.block
            if not event.arguments:
                return out
            return out + _event(b"content_block_delta", {
                "type": "content_block_delta", "index": self.tools[event.tool_index],
                "delta": {"type": "input_json_delta", "partial_json": event.arguments}})
        if isinstance(event, FinishDelta):
            self.stop_reason = _STOP_REASONS[event.reason]
        return b""

    def finish(self) -> bytes:
        return self._close() + _event(b"message_delta", {
            "type": "message_delta", "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
            "usage": encode_usage(self.usage)}) + _event(b"message_stop", {"type": "message_stop"})

    def error(self, exc: GatewayError) -> bytes:
        """A failure after the first byte: one ``error`` event, then the end."""
        return self._close() + b"event: error\ndata: " + anthropic_error_body(exc) + b"\n\n"
