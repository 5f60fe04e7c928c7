"""Anthropic Messages dialect → canonical chat requests, with validation.

A ``/v1/messages`` body becomes the same ``ChatRequest`` an OpenAI body
does, so any configured model answers it, with the same limits, billing,
cache and routing. What changes on the way:

- ``system`` (a string or text blocks) becomes the first, system message.
- A user turn's ``tool_result`` blocks become ``tool`` messages (before the
  turn's other content, as OpenAI wants them right after the call); an
  assistant turn's ``tool_use`` blocks become its ``tool_calls``.
- Images (``base64`` or ``url`` sources) become image parts.
- ``tool_choice`` ``any`` is ``required``, ``tool`` is a named choice, and
  ``disable_parallel_tool_use`` is ``parallel_tool_calls: false``.
- ``metadata.user_id`` is the end user; ``stop_sequences`` are ``stop``.
- ``output_config.format`` (a JSON schema) is ``response_format``
  ``json_schema``.

An Anthropic deployment gets the client's body itself (passthrough), so
for it nothing below is dropped. For every other provider these are
dropped, because they only steer Anthropic's own sampling, caching or
infrastructure: ``top_k``, ``thinking``, ``output_config.effort``,
``service_tier``, ``cache_control``, ``inference_geo``, ``speed``,
``diagnostics``, ``container``, ``user_profile_id``, ``workspace_id``,
``context_management``; the ``thinking`` / ``redacted_thinking`` blocks of
earlier assistant turns, ``cache_control`` marks on blocks, and a tool
result's ``is_error``. What only Anthropic can take —
content the canonical form cannot carry (documents, search results, file
images), server tools, and any other unknown field (``mcp_servers``, …) —
is kept for an Anthropic deployment and noted in ``origin.only``: any
other deployment refuses the request with 400 naming the field, since an
answer that silently ignored it would be wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from llm_gateway.errors import InvalidRequest
from llm_gateway.types import (
    ChatRequest,
    ContentPart,
    ImagePart,
    Message,
    Origin,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from llm_gateway.wire.fields import (
    bad_type,
    bad_value,
    missing,
    nonempty_list,
    opt_bool,
    opt_int,
    opt_number,
    opt_str,
    req_object,
    req_str,
)

_KNOWN_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "stop_sequences", "stream", "temperature", "top_p",
    "metadata", "tools", "tool_choice", "output_config",
})
# Hints to Anthropic's own sampling, caching and infrastructure.
_IGNORED_FIELDS = frozenset({
    "top_k", "thinking", "service_tier", "cache_control", "inference_geo", "speed", "diagnostics",
    "container", "user_profile_id", "workspace_id", "context_management",
})
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})


@dataclass(slots=True)
class _Only:
    """What of a body only an Anthropic deployment can take: (param,
    message) notes, and the bytes of the content the canonical messages do
    not carry but that deployment counts as input (the reservation's due)."""

    notes: list[tuple[str, str]] = field(default_factory=list)
    size: int = 0

    def add(self, param: str, message: str, content: Any) -> None:
        self.notes.append((param, message))
        self.uncounted(content)

    def uncounted(self, content: Any) -> None:
        self.size += len(orjson.dumps(content))


def _unsupported(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, code="unsupported_value", param=param)


def _image(block: dict[str, Any], param: str, only: _Only) -> ImagePart | None:
    source = req_object(block.get("source"), f"{param}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type = req_str(source, "media_type", f"{param}.source")
        return ImagePart(f"data:{media_type};base64,{req_str(source, 'data', f'{param}.source')}")
    if kind == "url":
        return ImagePart(req_str(source, "url", f"{param}.source"))
    only.add(f"{param}.source.type", f"Image sources of type {kind!r} are not supported here.", block)
    return None


def _blocks(value: Any, param: str) -> list[dict[str, Any]]:
    """A content value as a list of blocks (a string is one text block)."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if not isinstance(value, list):
        bad_type(param, "a string or an array of content blocks")
    for i, block in enumerate(value):
        if not isinstance(block, dict):
            bad_type(f"{param}[{i}]", "an object")
        if not isinstance(block.get("type"), str):
            missing(f"{param}[{i}].type")
    return value


def _part(block: dict[str, Any], param: str, only: _Only) -> ContentPart | None:
    """A text or image block; ``None`` for a kind only Anthropic takes
    (documents, search results, …), noted in ``only``."""
    kind = block["type"]
    if kind == "text":
        return TextPart(req_str(block, "text", param))
    if kind == "image":
        return _image(block, param, only)
    only.add(f"{param}.type", f"Content blocks of type {kind!r} are not supported here.", block)
    return None


def _parts(blocks: list[dict[str, Any]], param: str, only: _Only) -> list[ContentPart]:
    return [p for j, b in enumerate(blocks) if (p := _part(b, f"{param}[{j}]", only)) is not None]


def _tool_result(block: dict[str, Any], param: str, only: _Only) -> Message:
    call_id = req_str(block, "tool_use_id", param)
    content = block.get("content")
    parts = [] if content is None else _parts(_blocks(content, f"{param}.content"), f"{param}.content", only)
    return Message("tool", parts, tool_call_id=call_id)


def _tool_use(block: dict[str, Any], param: str) -> ToolCall:
    arguments = block.get("input", {})
    if not isinstance(arguments, dict):
        bad_type(f"{param}.input", "an object")
    return ToolCall(req_str(block, "id", param), req_str(block, "name", param), orjson.dumps(arguments).decode())


def _turn(role: str, content: Any, param: str, only: _Only) -> list[Message]:
    """One Anthropic turn as canonical messages: a user turn's tool results
    first, then its other content; an assistant turn as one message."""
    results: list[Message] = []
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(_blocks(content, param)):
        where = f"{param}[{j}]"
        kind = block["type"]
        if kind == "tool_result" and role == "user":
            results.append(_tool_result(block, where, only))
        elif kind == "tool_use" and role == "assistant":
            calls.append(_tool_use(block, where))
        elif kind in ("tool_use", "tool_result"):
            raise _unsupported(f"A {role} turn cannot hold {kind} blocks.", f"{where}.type")
        elif kind in _DROPPED_BLOCKS and role == "assistant":
            only.uncounted(block)  # dropped for other providers, read by Anthropic
        elif (part := _part(block, where, only)) is not None:
            parts.append(part)
    if role == "assistant":
        return [Message("assistant", parts, calls)] if parts or calls else []
    return [*results, Message("user", parts)] if parts else results


def _messages(value: Any, system: Any, only: _Only) -> list[Message]:
    value = nonempty_list(value, "messages")
    out: list[Message] = []
    if system is not None:
        blocks = _blocks(system, "system")
        if any(b["type"] != "text" for b in blocks):
            raise _unsupported("The system prompt may contain only text blocks.", "system")
        out.append(Message("system", _parts(blocks, "system", only)))
    for i, msg in enumerate(value):
        p = f"messages[{i}]"
        msg = req_object(msg, p)
        role = msg.get("role")
        if role is None:
            missing(f"{p}.role")
        if role not in ("user", "assistant"):
            bad_value(f"{p}.role", "must be 'user' or 'assistant'.")
        if "content" not in msg:
            missing(f"{p}.content")
        out.extend(_turn(role, msg["content"], f"{p}.content", only))
    return out


def _tools(value: Any, only: _Only) -> list[Tool] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        bad_type("tools", "an array")
    tools: list[Tool] = []
    for i, t in enumerate(value):
        p = f"tools[{i}]"
        t = req_object(t, p)
        if t.get("type", "custom") != "custom":
            only.add(f"{p}.type", "Only custom tools (name, description, input_schema) are supported here.", t)
            continue
        name = req_str(t, "name", p)
        schema = t.get("input_schema")
        if schema is None:
            missing(f"{p}.input_schema")
        if not isinstance(schema, dict):
            bad_type(f"{p}.input_schema", "an object")
        tools.append(Tool(name, opt_str(t, "description", f"{p}.description"), schema))
    return tools


def _tool_choice(value: Any) -> tuple[ToolChoice | None, bool | None]:
    """The choice, and ``parallel_tool_calls`` (``False`` when disabled)."""
    if value is None:
        return None, None
    value = req_object(value, "tool_choice")
    kind = value.get("type")
    parallel = False if opt_bool(value, "disable_parallel_tool_use") else None
    if kind == "auto":
        return ToolChoice("auto"), parallel
    if kind == "any":
        return ToolChoice("required"), parallel
    if kind == "none":
        return ToolChoice("none"), parallel
    if kind == "tool":
        return ToolChoice("named", req_str(value, "name", "tool_choice")), parallel
    bad_value("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'.")


def _response_format(value: Any) -> ResponseFormat | None:
    if value is None:
        return None
    fmt = req_object(value, "output_config").get("format")
    if fmt is None:
        return None
    fmt = req_object(fmt, "output_config.format")
    if fmt.get("type") != "json_schema":
        bad_value("output_config.format.type", "must be 'json_schema'.")
    schema = fmt.get("schema")
    if schema is None:
        missing("output_config.format.schema")
    if not isinstance(schema, dict):
        bad_type("output_config.format.schema", "an object")
    return ResponseFormat("json_schema", schema=schema)


def _stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        bad_type("stop_sequences", "an array of strings")
    return list(value) or None


def decode_messages_request(body: Any) -> ChatRequest:
    """Validate an Anthropic ``/v1/messages`` body and make it canonical."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    only = _Only()
    for key in body:
        if key not in _KNOWN_FIELDS and key not in _IGNORED_FIELDS:
            only.add(key, f"Unsupported parameter: '{key}'.", body[key])
    model = body.get("model")
    if model is None:
        missing("model")
    if not isinstance(model, str) or not model:
        bad_type("model", "a non-empty string")
    user = None
    if body.get("metadata") is not None:
        user = opt_str(req_object(body["metadata"], "metadata"), "user_id", "metadata.user_id")
    tool_choice, parallel = _tool_choice(body.get("tool_choice"))
    tools = _tools(body.get("tools"), only)
    # Numbers only Anthropic reads are bounded all the same.
    opt_int(body, "top_k", 0)
    if isinstance(body.get("thinking"), dict):
        opt_int(body["thinking"], "budget_tokens", 0, param="thinking.budget_tokens")
    if tool_choice is not None and tool_choice.mode in ("required", "named") and not body.get("tools"):
        raise InvalidRequest("tool_choice requires tools.", code="missing_field", param="tools")
    return ChatRequest(
        model=model,
        messages=_messages(body.get("messages"), body.get("system"), only),
        stream=bool(opt_bool(body, "stream")),
        include_usage=True,  # the Messages API always reports usage
        max_tokens=opt_int(body, "max_tokens", 1),
        temperature=opt_number(body, "temperature", 0, 1),
        top_p=opt_number(body, "top_p", 0, 1),
        stop=_stop(body.get("stop_sequences")),
        user=user,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        response_format=_response_format(body.get("output_config")),
        # What an Anthropic deployment gets (so all of it keys the cache).
        origin=Origin("anthropic.messages", body, only=only.notes[0] if only.notes else None,
                      uncarried_bytes=only.size),
    )
