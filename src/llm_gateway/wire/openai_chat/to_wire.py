"""Canonical requests → OpenAI wire format.

Used when a request did not arrive in OpenAI's dialect; an OpenAI-dialect
request goes upstream as its own raw body with only ``model`` rewritten.
"""

from __future__ import annotations

from typing import Any

from llm_gateway.types import ChatRequest, EmbeddingRequest, ImagePart, Message, OtherPart, TextPart


def passthrough_body(req: ChatRequest, model: str) -> dict[str, Any]:
    """The client's own body (any dialect) with ``model`` replaced; never
    mutates the client's body."""
    assert req.origin is not None
    body = dict(req.origin.body)
    body["model"] = model
    return body


def passthrough_chat_body(req: ChatRequest, model: str, *, force_usage: bool) -> dict[str, Any]:
    """The client's own body with ``model`` replaced (and, for streams, usage
    requested so the gateway can bill). Never mutates the client's body: a
    retry on another deployment reuses it."""
    assert req.origin is not None
    body = dict(req.origin.body)
    body["model"] = model
    if req.stream and force_usage:
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        body["stream_options"] = options
    return body


def _content(msg: Message) -> str | list[dict[str, Any]] | None:
    if not msg.content:
        return None
    if len(msg.content) == 1 and isinstance(msg.content[0], TextPart):
        return msg.content[0].text
    parts: list[dict[str, Any]] = []
    for p in msg.content:
        if isinstance(p, TextPart):
            parts.append({"type": "text", "text": p.text})
        elif isinstance(p, ImagePart):
            image: dict[str, Any] = {"url": p.url}
            if p.detail:
                image["detail"] = p.detail
            parts.append({"type": "image_url", "image_url": image})
        elif isinstance(p, OtherPart):
            parts.append(p.raw)
    return parts


def _message(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role, "content": _content(msg)}
    if msg.role == "tool":
        out["tool_call_id"] = msg.tool_call_id
        if out["content"] is None:
            out["content"] = ""
    if msg.tool_calls:
        out["tool_calls"] = [
            {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
            for t in msg.tool_calls
        ]
    if msg.name:
        out["name"] = msg.name
    return out


def chat_body(req: ChatRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [_message(m) for m in req.messages]}
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if req.max_tokens is not None:
        body["max_completion_tokens"] = req.max_tokens
    for key in ("temperature", "top_p", "stop", "seed", "n", "user", "presence_penalty",
                "frequency_penalty", "parallel_tool_calls", "reasoning_effort"):
        value = getattr(req, key)
        if value is not None:
            body[key] = value
    if req.tools is not None:
        tools = []
        for t in req.tools:
            fn: dict[str, Any] = {"name": t.name}
            if t.description is not None:
                fn["description"] = t.description
            if t.parameters is not None:
                fn["parameters"] = t.parameters
            if t.strict is not None:
                fn["strict"] = t.strict
            tools.append({"type": "function", "function": fn})
        body["tools"] = tools
    if req.tool_choice is not None:
        tc = req.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": tc.name}} if tc.mode == "named" else tc.mode
        )
    if req.response_format is not None:
        rf = req.response_format
        if rf.type == "json_schema":
            js: dict[str, Any] = {"name": rf.name or "response", "schema": rf.schema or {}}
            if rf.strict is not None:
                js["strict"] = rf.strict
            body["response_format"] = {"type": "json_schema", "json_schema": js}
        else:
            body["response_format"] = {"type": rf.type}
    body.update(req.extra)
    return body


def embedding_body(req: EmbeddingRequest, model: str) -> dict[str, Any]:
    if req.raw is not None:
        body = dict(req.raw)
        body["model"] = model
        return body
    body = {"model": model, "input": req.inputs, "encoding_format": req.encoding_format}
    if req.dimensions is not None:
        body["dimensions"] = req.dimensions
    if req.user is not None:
        body["user"] = req.user
    return body
