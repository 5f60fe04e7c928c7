"""OpenAI dialect → canonical requests, with validation.

Errors name the offending field in OpenAI's style (``messages[1].content``)
so a client sees exactly what to fix. Fields the gateway does not interpret
are kept in ``extra`` and the whole body in ``origin`` for the passthrough path.
"""

from __future__ import annotations

from typing import Any, Literal

from llm_gateway.errors import InvalidRequest
from llm_gateway.types import (
    ChatRequest,
    ContentPart,
    EmbeddingRequest,
    ImagePart,
    Message,
    Origin,
    OtherPart,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from llm_gateway.wire.fields import bad_type as _bad_type
from llm_gateway.wire.fields import bad_value as _bad_value
from llm_gateway.wire.fields import missing as _missing
from llm_gateway.wire.fields import nonempty_list
from llm_gateway.wire.fields import opt_bool as _opt_bool
from llm_gateway.wire.fields import opt_int as _opt_int
from llm_gateway.wire.fields import opt_number as _opt_number
from llm_gateway.wire.fields import opt_str as _opt_str

_KNOWN_CHAT_FIELDS = frozenset({
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "stop", "seed", "n", "user", "tools", "tool_choice",
    "parallel_tool_calls", "response_format", "presence_penalty", "frequency_penalty",
})
# The largest embedding any provider offers is 3072 wide; this leaves room and bounds the work.
MAX_DIMENSIONS = 8192
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}


def _content(value: Any, param: str) -> list[ContentPart]:
    if value is None:
        return []
    if isinstance(value, str):
        return [TextPart(value)]
    if not isinstance(value, list):
        _bad_type(param, "a string or an array of content parts")
    parts: list[ContentPart] = []
    for i, part in enumerate(value):
        p = f"{param}[{i}]"
        if not isinstance(part, dict):
            _bad_type(p, "an object")
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if text is None:
                _missing(f"{p}.text")
            if not isinstance(text, str):
                _bad_type(f"{p}.text", "a string")
            parts.append(TextPart(text))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                _missing(f"{p}.image_url.url")
            detail = image.get("detail") if isinstance(image, dict) else None
            parts.append(ImagePart(url, detail if isinstance(detail, str) else None))
        elif isinstance(kind, str):
            parts.append(OtherPart(part))
        else:
            _missing(f"{p}.type")
    return parts


def _tool_calls(value: Any, param: str) -> list[ToolCall]:
    if value is None:
        return []
    if not isinstance(value, list):
        _bad_type(param, "an array")
    calls: list[ToolCall] = []
    for i, call in enumerate(value):
        p = f"{param}[{i}]"
        if not isinstance(call, dict):
            _bad_type(p, "an object")
        fn = call.get("function")
        if not isinstance(fn, dict):
            _missing(f"{p}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            _missing(f"{p}.function.name")
        args = fn.get("arguments", "")
        if not isinstance(args, str):
            _bad_type(f"{p}.function.arguments", "a string")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            _missing(f"{p}.id")
        calls.append(ToolCall(call_id, name, args))
    return calls


def _messages(value: Any) -> list[Message]:
    value = nonempty_list(value, "messages")
    out: list[Message] = []
    for i, msg in enumerate(value):
        p = f"messages[{i}]"
        if not isinstance(msg, dict):
            _bad_type(p, "an object")
        role = msg.get("role")
        if role is None:
            _missing(f"{p}.role")
        canonical = _ROLES.get(role) if isinstance(role, str) else None
        if canonical is None:
            _bad_value(f"{p}.role", "must be one of 'system', 'developer', 'user', 'assistant', 'tool'.")
        if "content" not in msg and role != "assistant":
            _missing(f"{p}.content")
        content = _content(msg.get("content"), f"{p}.content")
        tool_calls = _tool_calls(msg.get("tool_calls"), f"{p}.tool_calls") if role == "assistant" else []
        tool_call_id = None
        if role == "tool":
            tool_call_id = msg.get("tool_call_id")
            if not isinstance(tool_call_id, str) or not tool_call_id:
                _missing(f"{p}.tool_call_id")
        name = _opt_str(msg, "name", f"{p}.name")
        out.append(Message(canonical, content, tool_calls, tool_call_id, name))  # type: ignore[arg-type]
    return out


def _tools(value: Any) -> list[Tool] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        _bad_type("tools", "an array")
    tools: list[Tool] = []
    for i, t in enumerate(value):
        p = f"tools[{i}]"
        if not isinstance(t, dict):
            _bad_type(p, "an object")
        if t.get("type", "function") != "function":
            _bad_value(f"{p}.type", "only 'function' tools are supported.")
        fn = t.get("function")
        if not isinstance(fn, dict):
            _missing(f"{p}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            _missing(f"{p}.function.name")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            _bad_type(f"{p}.function.parameters", "an object")
        desc = _opt_str(fn, "description", f"{p}.function.description")
        strict = fn.get("strict")
        tools.append(Tool(name, desc, params, strict if isinstance(strict, bool) else None))
    return tools


def _tool_choice(value: Any) -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value not in ("auto", "none", "required"):
            _bad_value("tool_choice", "must be 'auto', 'none', 'required' or a named function.")
        return ToolChoice(value)  # type: ignore[arg-type]
    if isinstance(value, dict):
        fn = value.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            _missing("tool_choice.function.name")
        return ToolChoice("named", name)
    _bad_type("tool_choice", "a string or an object")


def _response_format(value: Any) -> ResponseFormat | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        _bad_type("response_format", "an object")
    kind = value.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind == "json_schema":
        js = value.get("json_schema")
        if not isinstance(js, dict):
            _missing("response_format.json_schema")
        name = js.get("name")
        if not isinstance(name, str) or not name:
            _missing("response_format.json_schema.name")
        schema = js.get("schema")
        if schema is not None and not isinstance(schema, dict):
            _bad_type("response_format.json_schema.schema", "an object")
        strict = js.get("strict")
        return ResponseFormat("json_schema", name, schema, strict if isinstance(strict, bool) else None)
    _bad_value("response_format.type", "must be 'text', 'json_object' or 'json_schema'.")


def _stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        if len(value) > 4:
            _bad_value("stop", "at most 4 stop sequences.")
        return list(value)
    _bad_type("stop", "a string or an array of strings")


def decode_chat_request(body: Any) -> ChatRequest:
    """Validate an OpenAI ``/v1/chat/completions`` body and make it canonical."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    model = body.get("model")
    if model is None:
        _missing("model")
    if not isinstance(model, str) or not model:
        _bad_type("model", "a non-empty string")
    messages = _messages(body.get("messages"))
    stream = bool(_opt_bool(body, "stream"))
    include_usage = False
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict):
            _bad_type("stream_options", "an object")
        include_usage = bool(_opt_bool(so, "include_usage"))
    max_tokens = _opt_int(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _opt_int(body, "max_tokens", 1)
    n = _opt_int(body, "n", 1, 128)
    _opt_bool(body, "logprobs")
    _opt_int(body, "top_logprobs", 0, 20)
    seed = _opt_int(body, "seed", -(2**63), 2**63 - 1)
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        temperature=_opt_number(body, "temperature", 0, 2),
        top_p=_opt_number(body, "top_p", 0, 1),
        stop=_stop(body.get("stop")),
        seed=seed,
        n=n,
        user=_opt_str(body, "user"),
        presence_penalty=_opt_number(body, "presence_penalty", -2, 2),
        frequency_penalty=_opt_number(body, "frequency_penalty", -2, 2),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=_opt_bool(body, "parallel_tool_calls"),
        response_format=_response_format(body.get("response_format")),
        origin=Origin("openai.chat", body),
        extra={k: v for k, v in body.items() if k not in _KNOWN_CHAT_FIELDS},
    )


def decode_embedding_request(body: Any) -> EmbeddingRequest:
    """Validate an OpenAI ``/v1/embeddings`` body and make it canonical."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    model = body.get("model")
    if model is None:
        _missing("model")
    if not isinstance(model, str) or not model:
        _bad_type("model", "a non-empty string")
    value = body.get("input")
    if value is None:
        _missing("input")
    inputs: list[str] | list[list[int]]
    if isinstance(value, str):
        inputs = [value]
    elif isinstance(value, list) and value and all(isinstance(s, str) for s in value):
        inputs = list(value)
    elif isinstance(value, list) and value and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value
    ):
        inputs = [list(value)]
    elif isinstance(value, list) and value and all(
        isinstance(a, list) and a and all(isinstance(t, int) and not isinstance(t, bool) for t in a)
        for a in value
    ):
        inputs = [list(a) for a in value]
    elif isinstance(value, list) and not value:
        _bad_value("input", "expected a non-empty array.")
    else:
        _bad_type("input", "a string, an array of strings, or an array of token arrays")
    if len(inputs) > 2048:
        _bad_value("input", "at most 2048 inputs per request.")
    if any(isinstance(s, str) and s == "" for s in inputs):
        _bad_value("input", "inputs must not be empty strings.")
    fmt: Literal["float", "base64"] = "float"
    if body.get("encoding_format") == "base64":
        fmt = "base64"
    elif body.get("encoding_format") not in (None, "float"):
        _bad_value("encoding_format", "must be 'float' or 'base64'.")
    dims = _opt_int(body, "dimensions", 1, MAX_DIMENSIONS)
    return EmbeddingRequest(model, inputs, fmt, dims, _opt_str(body, "user"), raw=body)
