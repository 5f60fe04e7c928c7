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
result's ``is_error``. Refused with 400: content the canonical form cannot
carry (documents, server tools' blocks), server tools, and any other unknown
field (``mcp_servers``, …) — an answer that silently ignored it would be
wrong.
"""

from __future__ import annotations

from typing import Any

import orjson

from llm_gateway.api.fields import bad_type, bad_value, missing, opt_bool, opt_int, opt_number, opt_str
from llm_gateway.errors import InvalidRequest
from llm_gateway.types import (
    ChatRequest,
    ContentPart,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
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


def _unsupported(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, code="unsupported_value", param=param)


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        bad_type(param, "an object")
    return value


def _string(block: dict[str, Any], key: str, param: str) -> str:
    value = block.get(key)
    if value is None:
        missing(f"{param}.{key}")
    if not isinstance(value, str):
        bad_type(f"{param}.{key}", "a string")
    return value


def _image(block: dict[str, Any], param: str) -> ImagePart:
    source = _object(block.get("source"), f"{param}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type = _string(source, "media_type", f"{param}.source")
        return ImagePart(f"data:{media_type};base64,{_string(source, 'data', f'{param}.source')}")
    if kind == "url":
        return ImagePart(_string(source, "url", f"{param}.source"))
    raise _unsupported("Image sources must be of type 'base64' or 'url'.", f"{param}.source.type")


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


def _part(block: dict[str, Any], param: str) -> ContentPart:
    kind = block["type"]
    if kind == "text":
        return TextPart(_string(block, "text", param))
    if kind == "image":
        return _image(block, param)
    raise _unsupported(f"Content blocks of type {kind!r} are not supported here.", f"{param}.type")


def _tool_result(block: dict[str, Any], param: str) -> Message:
    call_id = _string(block, "tool_use_id", param)
    content = block.get("content")
    parts: list[ContentPart] = []
    if content is not None:
        for j, inner in enumerate(_blocks(content, f"{param}.content")):
            parts.append(_part(inner, f"{param}.content[{j}]"))
    return Message("tool", parts, tool_call_id=call_id)


def _tool_use(block: dict[str, Any], param: str) -> ToolCall:
    arguments = block.get("input", {})
    if not isinstance(arguments, dict):
        bad_type(f"{param}.input", "an object")
    return ToolCall(_string(block, "id", param), _string(block, "name", param), orjson.dumps(arguments).decode())


def _turn(role: str, content: Any, param: str) -> list[Message]:
    """One Anthropic turn as canonical messages: a user turn's tool results
    first, then its other content; an assistant turn as one message."""
    results: list[Message] = []
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    for j, block in enumerate(_blocks(content, param)):
        where = f"{param}[{j}]"
        kind = block["type"]
        if kind == "tool_result" and role == "user":
            results.append(_tool_result(block, where))
        elif kind == "tool_use" and role == "assistant":
            calls.append(_tool_use(block, where))
        elif kind in _DROPPED_BLOCKS and role == "assistant":
            continue
        else:
            parts.append(_part(block, where))
    if role == "assistant":
        return [Message("assistant", parts, calls)] if parts or calls else []
    return [*results, Message("user", parts)] if parts else results


def _messages(value: Any, system: Any) -> list[Message]:
    if value is None:
        missing("messages")
    if not isinstance(value, list):
        bad_type("messages", "an array")
    if not value:
        bad_value("messages", "expected a non-empty array.")
    out: list[Message] = []
    if system is not None:
        parts = [_part(b, f"system[{i}]") for i, b in enumerate(_blocks(system, "system"))]
        if any(not isinstance(p, TextPart) for p in parts):
            raise _unsupported("The system prompt may contain only text blocks.", "system")
        out.append(Message("system", parts))
    for i, msg in enumerate(value):
        p = f"messages[{i}]"
        msg = _object(msg, p)
        role = msg.get("role")
        if role is None:
            missing(f"{p}.role")
        if role not in ("user", "assistant"):
            bad_value(f"{p}.role", "must be 'user' or 'assistant'.")
        if "content" not in msg:
            missing(f"{p}.content")
        out.extend(_turn(role, msg["content"], f"{p}.content"))
    return out


def _tools(value: Any) -> list[Tool] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        bad_type("tools", "an array")
    tools: list[Tool] = []
    for i, t in enumerate(value):
        p = f"tools[{i}]"
        t = _object(t, p)
        if t.get("type", "custom") != "custom":
            raise _unsupported("Only custom tools (name, description, input_schema) are supported.", f"{p}.type")
        name = _string(t, "name", p)
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
    value = _object(value, "tool_choice")
    kind = value.get("type")
    parallel = False if opt_bool(value, "disable_parallel_tool_use") else None
    if kind == "auto":
        return ToolChoice("auto"), parallel
    if kind == "any":
        return ToolChoice("required"), parallel
    if kind == "none":
        return ToolChoice("none"), parallel
    if kind == "tool":
        return ToolChoice("named", _string(value, "name", "tool_choice")), parallel
    bad_value("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'.")


def _response_format(value: Any) -> ResponseFormat | None:
    if value is None:
        return None
    fmt = _object(value, "output_config").get("format")
    if fmt is None:
        return None
    fmt = _object(fmt, "output_config.format")
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
    for key in body:
        if key not in _KNOWN_FIELDS and key not in _IGNORED_FIELDS:
            raise InvalidRequest(f"Unsupported parameter: '{key}'.", code="unsupported_parameter", param=key)
    model = body.get("model")
    if model is None:
        missing("model")
    if not isinstance(model, str) or not model:
        bad_type("model", "a non-empty string")
    user = None
    if body.get("metadata") is not None:
        user = opt_str(_object(body["metadata"], "metadata"), "user_id", "metadata.user_id")
    tool_choice, parallel = _tool_choice(body.get("tool_choice"))
    tools = _tools(body.get("tools"))
    if tool_choice is not None and tool_choice.mode in ("required", "named") and not tools:
        raise InvalidRequest("tool_choice requires tools.", code="missing_field", param="tools")
    return ChatRequest(
        model=model,
        messages=_messages(body.get("messages"), body.get("system")),
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
        cache_basis=body,  # what an Anthropic deployment gets, so all of it changes the answer
        anthropic_body=body,
    )
