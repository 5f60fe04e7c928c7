"""Canonical results → OpenAI dialect (response bodies and stream chunks)."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson

from llm_gateway.types import (
    ChatResponse,
    EmbeddingResponse,
    FinishDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)


def encode_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def decode_usage(data: Any) -> Usage | None:
    """OpenAI ``usage`` object → canonical (also used for passthrough billing)."""
    if not isinstance(data, dict):
        return None
    prompt = data.get("prompt_tokens") or 0
    completion = data.get("completion_tokens") or 0
    details = data.get("prompt_tokens_details") or {}
    cdetails = data.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(prompt),
        output_tokens=int(completion),
        cached_input_tokens=int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
        reasoning_tokens=int(cdetails.get("reasoning_tokens") or 0) if isinstance(cdetails, dict) else 0,
    )


def encode_chat_response(resp: ChatResponse) -> dict[str, Any]:
    choices = []
    for c in resp.choices:
        message: dict[str, Any] = {"role": "assistant", "content": c.text, "refusal": c.refusal}
        if c.tool_calls:
            message["tool_calls"] = [
                {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
                for t in c.tool_calls
            ]
        choices.append(
            {"index": c.index, "message": message, "logprobs": None, "finish_reason": c.finish_reason or "stop"}
        )
    out: dict[str, Any] = {
        "id": resp.id,
        "object": "chat.completion",
        "created": resp.created,
        "model": resp.model,
        "choices": choices,
    }
    if resp.usage is not None:
        out["usage"] = encode_usage(resp.usage)
    if resp.system_fingerprint:
        out["system_fingerprint"] = resp.system_fingerprint
    return out


class ChunkEncoder:
    """Per-request state for turning canonical stream events into OpenAI
    ``chat.completion.chunk`` payloads (the bytes after ``data: ``)."""

    __slots__ = ("_head", "_include_usage", "_started")

    def __init__(self, id: str, model: str, created: int, include_usage: bool) -> None:
        head = orjson.dumps({"id": id, "object": "chat.completion.chunk", "created": created, "model": model})
        self._head = head[:-1] + b","  # reuse the fixed prefix of every chunk
        self._include_usage = include_usage
        self._started: set[int] = set()

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if index not in self._started:
            self._started.add(index)
            delta = {"role": "assistant", **delta}
        body: dict[str, Any] = {
            "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]
        }
        return self._head + orjson.dumps(body)[1:]

    def encode(self, event: StreamEvent) -> bytes | None:
        if isinstance(event, TextDelta):
            return self._chunk(event.index, {"content": event.text})
        if isinstance(event, ToolCallDelta):
            call: dict[str, Any] = {"index": event.tool_index}
            if event.id is not None:
                call["id"] = event.id
                call["type"] = "function"
            fn: dict[str, Any] = {"arguments": event.arguments}
            if event.name is not None:
                fn["name"] = event.name
            call["function"] = fn
            delta: dict[str, Any] = {"tool_calls": [call]}
            if event.id is not None and event.index not in self._started:
                delta = {"content": None, "tool_calls": [call]}
            return self._chunk(event.index, delta)
        if isinstance(event, FinishDelta):
            return self._chunk(event.index, {}, event.reason)
        if isinstance(event, UsageDelta):
            if not self._include_usage:
                return None
            return self._head + orjson.dumps({"choices": [], "usage": encode_usage(event.usage)})[1:]
        return None


def encode_embedding_response(resp: EmbeddingResponse) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(resp.vectors)],
        "model": resp.model,
        "usage": {"prompt_tokens": resp.usage.input_tokens, "total_tokens": resp.usage.input_tokens},
    }


def floats_to_base64(vector: list[float]) -> str:
    """OpenAI's base64 embedding encoding: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
