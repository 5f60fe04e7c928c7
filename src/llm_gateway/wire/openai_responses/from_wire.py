"""OpenAI Responses API answers → canonical: a ``response`` object, its
``usage``, and the events of its stream.

Used for an OpenAI deployment's own answers (passed through to the client
byte for byte): the gateway reads them for billing, for the response cache
(which keeps OpenAI chat bodies) and for a client of another dialect.
"""

from __future__ import annotations

from typing import Any

import orjson

from llm_gateway.errors import UpstreamError
from llm_gateway.types import (
    ChatResponse,
    Choice,
    FinishDelta,
    FinishReason,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageDelta,
)

# A stream's last event: what ends it, whichever way it went.
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


def usage(data: Any) -> Usage | None:
    """A Responses ``usage`` object → canonical (the same split: input
    includes cached, output includes reasoning)."""
    if not isinstance(data, dict):
        return None
    details = data.get("input_tokens_details")
    odetails = data.get("output_tokens_details")
    return Usage(
        input_tokens=int(data.get("input_tokens") or 0),
        output_tokens=int(data.get("output_tokens") or 0),
        cached_input_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
        reasoning_tokens=int(odetails.get("reasoning_tokens") or 0) if isinstance(odetails, dict) else 0,
    )


def finish_reason(data: dict[str, Any], has_calls: bool) -> FinishReason:
    if data.get("status") == "incomplete":
        details = data.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        return "content_filter" if reason == "content_filter" else "length"
    return "tool_calls" if has_calls else "stop"


def _text(content: Any) -> tuple[str, str]:
    """A message item's output text and refusal."""
    texts, refusals = [], []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "output_text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
            refusals.append(part["refusal"])
    return "".join(texts), "".join(refusals)


def chat_response(data: Any) -> ChatResponse:
    """A ``response`` object as one canonical choice: its messages' text
    and its function calls (built-in tool calls and reasoning are OpenAI's
    own and have no canonical form)."""
    if not isinstance(data, dict) or not isinstance(data.get("output"), list):
        raise UpstreamError("The provider answered with an unexpected body.")
    texts, refusals, calls = [], [], []
    for item in data["output"]:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            text, refusal = _text(item.get("content"))
            texts.append(text)
            refusals.append(refusal)
        elif item.get("type") == "function_call":
            calls.append(ToolCall(str(item.get("call_id") or ""), str(item.get("name") or ""),
                                  str(item.get("arguments") or "")))
    text, refusal = "".join(texts), "".join(refusals)
    choice = Choice(0, text if text or not calls else None, calls, finish_reason(data, bool(calls)),
                    refusal or None)
    return ChatResponse(str(data.get("id", "")), str(data.get("model", "")), int(data.get("created_at") or 0),
                        [choice], usage(data.get("usage")))


def frame_data(frame: bytes) -> Any:
    """The JSON of one SSE frame (``event: …\\ndata: …\\n\\n``)."""
    at = frame.find(b"data:")
    if at < 0:
        return None
    try:
        return orjson.loads(frame[at + 5:])
    except orjson.JSONDecodeError:
        return None


def event_events(data: Any) -> list[StreamEvent]:
    """The canonical events of one Responses stream event. A function
    call's ``output_index`` is its tool index."""
    if not isinstance(data, dict):
        return []
    kind = data.get("type")
    if kind == "response.output_text.delta" and isinstance(data.get("delta"), str):
        return [TextDelta(data["delta"])]
    if kind == "response.output_item.added":
        item = data.get("item")
        if isinstance(item, dict) and item.get("type") == "function_call":
            return [ToolCallDelta(int(data.get("output_index") or 0), str(item.get("arguments") or ""),
                                  str(item.get("call_id") or ""), str(item.get("name") or ""))]
    elif kind == "response.function_call_arguments.delta" and isinstance(data.get("delta"), str):
        return [ToolCallDelta(int(data.get("output_index") or 0), data["delta"])]
    elif kind in ("response.completed", "response.incomplete"):
        response = data.get("response")
        if isinstance(response, dict):
            output = response.get("output")
            calls = any(isinstance(i, dict) and i.get("type") == "function_call" for i in output or [])
            events: list[StreamEvent] = [FinishDelta(finish_reason(response, calls))]
            reported = usage(response.get("usage"))
            if reported is not None:
                events.append(UsageDelta(reported))
            return events
    return []


def frame_events(frame: bytes) -> list[StreamEvent]:
    return event_events(frame_data(frame))
