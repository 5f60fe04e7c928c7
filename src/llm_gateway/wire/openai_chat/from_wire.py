"""OpenAI wire format → canonical responses and stream events."""

from __future__ import annotations

from typing import Any

from llm_gateway.errors import UpstreamError
from llm_gateway.types import (
    ChatResponse,
    Choice,
    EmbeddingResponse,
    FinishDelta,
    FinishReason,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from llm_gateway.wire.openai_chat.encode import decode_usage

_FINISH: dict[str, FinishReason] = {
    "stop": "stop", "length": "length", "tool_calls": "tool_calls",
    "function_call": "tool_calls", "content_filter": "content_filter",
}


def chat_response(data: Any) -> ChatResponse:
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise UpstreamError("The provider answered with an unexpected body.")
    choices = []
    for i, c in enumerate(data["choices"]):
        msg = c.get("message") or {}
        calls = [
            ToolCall(t.get("id", ""), t["function"]["name"], t["function"].get("arguments") or "")
            for t in msg.get("tool_calls") or []
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
        choices.append(Choice(
            index=c.get("index", i),
            text=msg.get("content"),
            tool_calls=calls,
            finish_reason=_FINISH.get(c.get("finish_reason") or "stop", "stop"),
            refusal=msg.get("refusal"),
        ))
    return ChatResponse(
        id=str(data.get("id", "")),
        model=str(data.get("model", "")),
        created=int(data.get("created") or 0),
        choices=choices,
        usage=decode_usage(data.get("usage")),
        system_fingerprint=data.get("system_fingerprint"),
    )


def chunk_events(data: Any) -> list[StreamEvent]:
    """Canonical events of one ``chat.completion.chunk``."""
    events: list[StreamEvent] = []
    if not isinstance(data, dict):
        return events
    for c in data.get("choices") or []:
        index = c.get("index", 0)
        delta = c.get("delta") or {}
        if delta.get("content"):
            events.append(TextDelta(delta["content"], index))
        for t in delta.get("tool_calls") or []:
            fn = t.get("function") or {}
            events.append(ToolCallDelta(
                tool_index=t.get("index", 0),
                arguments=fn.get("arguments") or "",
                id=t.get("id"),
                name=fn.get("name"),
                index=index,
            ))
        if c.get("finish_reason"):
            events.append(FinishDelta(_FINISH.get(c["finish_reason"], "stop"), index))
    usage = decode_usage(data.get("usage"))
    if usage is not None:
        events.append(UsageDelta(usage))
    return events


def embedding_response(data: Any) -> EmbeddingResponse:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UpstreamError("The provider answered with an unexpected body.")
    items = sorted(data["data"], key=lambda d: d.get("index", 0))
    usage = data.get("usage") or {}
    return EmbeddingResponse(
        model=str(data.get("model", "")),
        vectors=[d["embedding"] for d in items],
        usage=Usage(input_tokens=int(usage.get("prompt_tokens") or 0)),
    )
