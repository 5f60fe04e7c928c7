"""Anthropic Messages API answers → canonical responses, usage and errors."""

from __future__ import annotations

from typing import Any

import orjson

from llm_gateway.errors import GatewayError, UpstreamError, upstream_status_error
from llm_gateway.types import ChatResponse, Choice, FinishReason, ToolCall, Usage

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# The HTTP status each error ``type`` of the API reference stands for; used for
# ``error`` events, which arrive inside a 200 stream.
_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage(data: Any) -> Usage:
    """``usage`` → canonical: input counts cache reads and writes too (SPEC §8)."""
    if not isinstance(data, dict):
        return Usage()
    cache_read = _int(data, "cache_read_input_tokens")
    cache_write = _int(data, "cache_creation_input_tokens")
    return Usage(
        input_tokens=_int(data, "input_tokens") + cache_read + cache_write,
        output_tokens=_int(data, "output_tokens"),
        cached_input_tokens=cache_read,
    )


def finish_reason(stop_reason: Any, *, json_mode: bool = False) -> FinishReason:
    """``stop_reason`` → canonical; the emulated JSON tool finishing is a stop."""
    reason = _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
    if json_mode and reason == "tool_calls":
        return "stop"
    return reason


def chat_response(data: Any, *, created: int, json_tool: str | None = None) -> ChatResponse:
    """A Messages API ``message`` → a one-choice canonical response.

    With ``json_tool`` set (``response_format`` emulation) that tool's input
    is text content, the JSON the client asked for. (Anthropic writes no text
    before a forced tool call, so the content is that JSON alone.)
    """
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise UpstreamError("The provider answered with an unexpected body.")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in data["content"]:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            if json_tool is not None and block.get("name") == json_tool:
                texts.append(arguments)
                continue
            calls.append(ToolCall(str(block.get("id", "")), str(block.get("name", "")), arguments))
        # thinking, redacted_thinking and server tool blocks have no OpenAI form
    text = "".join(texts) if texts else None
    json_mode = json_tool is not None
    return ChatResponse(
        id=str(data.get("id", "")),
        model=str(data.get("model", "")),
        created=created,
        choices=[Choice(0, text, calls, finish_reason(data.get("stop_reason"), json_mode=json_mode))],
        usage=usage(data.get("usage")),
    )


def stream_error(data: Any, provider: str) -> GatewayError:
    """An ``error`` event inside a stream → the error tree. Server-side
    failures keep only the error type, never the provider's wording."""
    err = data.get("error") if isinstance(data, dict) else None
    kind = err.get("type") if isinstance(err, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    status = _ERROR_STATUS.get(kind, 500) if isinstance(kind, str) else 500
    if status >= 500:
        detail = f" ({kind})" if isinstance(kind, str) else ""
        return UpstreamError(f"The {provider} provider failed mid-stream{detail}.")
    return upstream_status_error(
        status, message if isinstance(message, str) else None,
        code=kind if isinstance(kind, str) else None, provider=provider,
    )
