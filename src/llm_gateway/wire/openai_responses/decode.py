"""OpenAI Responses API request (``POST /v1/responses``) → canonical, with
validation.

``decode_responses_request`` checks the body and reads its input into
items (a string is one user message); ``to_chat_request`` makes the
canonical request from the items the model is to see (the stored
conversation's, when ``previous_response_id`` continues one, then these).

- ``instructions`` is the first, system message; ``developer`` and
  ``system`` messages are system messages.
- ``input_text`` / ``output_text`` / ``refusal`` parts are text,
  ``input_image`` (``image_url``) an image; ``input_file`` and an image by
  ``file_id`` are kept as OpenAI chat ``file`` / other parts, which only an
  OpenAI-format upstream takes (the others refuse them with 400).
- ``function_call`` items are the assistant's tool calls,
  ``function_call_output`` items tool results; ``reasoning`` items are
  dropped for providers other than OpenAI (as Anthropic's thinking blocks).
- ``text.format`` is the response format, ``max_output_tokens`` the answer's
  cap, ``reasoning.effort`` the reasoning effort.

An OpenAI deployment (kind ``openai``) gets the client's body itself, so
for it nothing is dropped. What only OpenAI can take — built-in tools
(``web_search``, ``file_search``, ``code_interpreter``, …), other item types,
a hosted ``tool_choice``, ``prompt`` and any unknown field — is noted in
``origin.only``: any other deployment refuses the request with 400 naming
it. Every number the client sends is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from llm_gateway.errors import InvalidRequest
from llm_gateway.types import (
    ChatRequest,
    ContentPart,
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
from llm_gateway.wire.fields import (
    bad_type,
    bad_value,
    missing,
    opt_bool,
    opt_int,
    opt_number,
    opt_str,
    req_object,
    req_str,
)

_KNOWN_FIELDS = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "max_output_tokens",
    "temperature", "top_p", "reasoning", "metadata", "user", "store", "stream", "previous_response_id",
})
# Read by OpenAI only; another provider answers the same without them.
_IGNORED_FIELDS = frozenset({
    "include", "truncation", "service_tier", "prompt_cache_key", "safety_identifier", "stream_options",
    "top_logprobs", "max_tool_calls", "background",
})
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_ID = 200
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
REASONING_SUMMARIES = ("auto", "concise", "detailed")


@dataclass(slots=True)
class ResponsesRequest:
    """A checked ``/v1/responses`` body: its own input as items, what the
    gateway keeps of it, and the (param, message) notes of what only an
    OpenAI deployment can take."""

    body: dict[str, Any]
    model: str
    items: list[dict[str, Any]]
    stream: bool
    store: bool
    previous_response_id: str | None
    only: list[tuple[str, str]]


def _check_part(part: Any, param: str, only: list[tuple[str, str]]) -> None:
    part = req_object(part, param)
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        req_str(part, "text", param)
    elif kind == "refusal":
        req_str(part, "refusal", param)
    elif kind == "input_image":
        if part.get("image_url") is None and part.get("file_id") is None:
            missing(f"{param}.image_url")
        opt_str(part, "image_url", f"{param}.image_url")
        opt_str(part, "file_id", f"{param}.file_id")
        if part.get("file_id") is not None:
            only.append((f"{param}.file_id", "Images given by file_id are OpenAI's own files."))
    elif kind == "input_file":
        for key in ("file_data", "file_id", "filename", "file_url"):
            opt_str(part, key, f"{param}.{key}")
    elif isinstance(kind, str):
        only.append((f"{param}.type", f"Content parts of type {kind[:40]!r} are not supported here."))
    else:
        missing(f"{param}.type")


def _check_item(item: Any, param: str, only: list[tuple[str, str]]) -> dict[str, Any]:
    item = req_object(item, param)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            bad_value(f"{param}.role", "must be one of 'user', 'assistant', 'system', 'developer'.")
        content = item.get("content")
        if content is None:
            missing(f"{param}.content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                _check_part(part, f"{param}.content[{j}]", only)
        elif not isinstance(content, str):
            bad_type(f"{param}.content", "a string or an array of content parts")
        return dict(item) if "type" in item else {"type": "message", **item}
    if kind == "function_call":
        for key in ("call_id", "name", "arguments"):
            req_str(item, key, param)
        return dict(item)
    if kind == "function_call_output":
        req_str(item, "call_id", param)
        output = item.get("output")
        if isinstance(output, list):
            for j, part in enumerate(output):
                _check_part(part, f"{param}.output[{j}]", only)
        elif not isinstance(output, str):
            bad_type(f"{param}.output", "a string or an array of content parts")
        return dict(item)
    if kind == "reasoning":
        return dict(item)  # OpenAI's own: dropped for other providers
    if isinstance(kind, str):
        only.append((f"{param}.type", f"Input items of type {kind[:40]!r} are not supported here."))
        return dict(item)
    missing(f"{param}.type")


def _items(value: Any, only: list[tuple[str, str]]) -> list[dict[str, Any]]:
    if value is None:
        missing("input")
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if not isinstance(value, list):
        bad_type("input", "a string or an array of input items")
    return [_check_item(item, f"input[{i}]", only) for i, item in enumerate(value)]


def _check_tools(value: Any, only: list[tuple[str, str]]) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        bad_type("tools", "an array")
    for i, tool in enumerate(value):
        p = f"tools[{i}]"
        tool = req_object(tool, p)
        kind = tool.get("type")
        if kind == "function":
            req_str(tool, "name", p)
            params = tool.get("parameters")
            if params is not None and not isinstance(params, dict):
                bad_type(f"{p}.parameters", "an object")
            opt_str(tool, "description", f"{p}.description")
            opt_bool(tool, "strict")
        elif isinstance(kind, str):
            only.append((f"{p}.type", f"The built-in tool {kind[:40]!r} is OpenAI's own."))
        else:
            missing(f"{p}.type")


def _check_metadata(value: Any) -> None:
    if value is None:
        return
    value = req_object(value, "metadata")
    if len(value) > MAX_METADATA_KEYS:
        bad_value("metadata", f"at most {MAX_METADATA_KEYS} keys.")
    for key, v in value.items():
        if len(key) > MAX_METADATA_KEY:
            bad_value("metadata", f"keys are at most {MAX_METADATA_KEY} characters.")
        if not isinstance(v, str):
            bad_type(f"metadata.{key[:MAX_METADATA_KEY]}", "a string")
        if len(v) > MAX_METADATA_VALUE:
            bad_value(f"metadata.{key[:MAX_METADATA_KEY]}", f"at most {MAX_METADATA_VALUE} characters.")


def decode_responses_request(body: Any) -> ResponsesRequest:
    """Validate a ``/v1/responses`` body (every field, whichever provider
    will serve it) and read its input into items."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    only: list[tuple[str, str]] = []
    for key in body:
        if key not in _KNOWN_FIELDS and key not in _IGNORED_FIELDS:
            only.append((key, f"Unsupported parameter: '{key[:60]}'."))
    model = body.get("model")
    if model is None:
        missing("model")
    if not isinstance(model, str) or not model:
        bad_type("model", "a non-empty string")
    if opt_bool(body, "background"):
        raise InvalidRequest("Background responses are not supported by this gateway.",
                             code="unsupported_value", param="background")
    items = _items(body.get("input"), only)
    opt_str(body, "instructions")
    _check_tools(body.get("tools"), only)
    _tool_choice(body.get("tool_choice"), only)
    opt_bool(body, "parallel_tool_calls")
    _text_format(body.get("text"))
    opt_int(body, "max_output_tokens", 1)
    opt_int(body, "max_tool_calls", 1, 10_000)
    opt_int(body, "top_logprobs", 0, 20)
    opt_number(body, "temperature", 0, 2)
    opt_number(body, "top_p", 0, 1)
    _reasoning(body.get("reasoning"))
    _check_metadata(body.get("metadata"))
    opt_str(body, "user")
    include = body.get("include")
    if include is not None and (not isinstance(include, list) or len(include) > 32
                                or not all(isinstance(s, str) for s in include)):
        bad_type("include", "an array of at most 32 strings")
    previous = opt_str(body, "previous_response_id")
    if previous is not None and not 0 < len(previous) <= MAX_ID:
        bad_value("previous_response_id", f"must be 1 to {MAX_ID} characters.")
    store = opt_bool(body, "store")
    return ResponsesRequest(body, model, items, bool(opt_bool(body, "stream")), store is not False, previous, only)


def _tool_choice(value: Any, only: list[tuple[str, str]] | None = None) -> ToolChoice | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value not in ("auto", "none", "required"):
            bad_value("tool_choice", "must be 'auto', 'none', 'required' or an object.")
        return ToolChoice(value)  # type: ignore[arg-type]
    value = req_object(value, "tool_choice")
    if value.get("type") == "function":
        return ToolChoice("named", req_str(value, "name", "tool_choice"))
    if only is not None:
        only.append(("tool_choice.type", f"A tool_choice of type {str(value.get('type'))[:40]!r} is OpenAI's own."))
    return None


def _text_format(value: Any) -> ResponseFormat | None:
    if value is None:
        return None
    fmt = req_object(value, "text").get("format")
    if fmt is None:
        return None
    fmt = req_object(fmt, "text.format")
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind == "json_schema":
        name = req_str(fmt, "name", "text.format")
        schema = fmt.get("schema")
        if schema is None:
            missing("text.format.schema")
        if not isinstance(schema, dict):
            bad_type("text.format.schema", "an object")
        return ResponseFormat("json_schema", name, schema, opt_bool(fmt, "strict"))
    bad_value("text.format.type", "must be 'text', 'json_object' or 'json_schema'.")


def _reasoning(value: Any) -> str | None:
    if value is None:
        return None
    value = req_object(value, "reasoning")
    effort = value.get("effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        bad_value("reasoning.effort", f"must be one of {', '.join(REASONING_EFFORTS)}.")
    summary = value.get("summary")
    if summary is not None and summary not in REASONING_SUMMARIES:
        bad_value("reasoning.summary", f"must be one of {', '.join(REASONING_SUMMARIES)}.")
    return effort if isinstance(effort, str) else None


# ------------------------------------------------------------ to canonical

def _parts(content: Any) -> list[ContentPart]:
    if isinstance(content, str):
        return [TextPart(content)]
    parts: list[ContentPart] = []
    for part in content if isinstance(content, list) else []:
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            parts.append(TextPart(part["text"]))
        elif kind == "refusal":
            parts.append(TextPart(part["refusal"]))
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            detail = part.get("detail")
            parts.append(ImagePart(part["image_url"], detail if isinstance(detail, str) else None))
        elif kind == "input_file":
            file = {k: part[k] for k in ("file_data", "file_id", "filename") if isinstance(part.get(k), str)}
            parts.append(OtherPart({"type": "file", "file": file}))
        else:
            parts.append(OtherPart(part))
    return parts


_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def messages_of(items: list[dict[str, Any]], instructions: str | None) -> list[Message]:
    """The canonical conversation of checked input items: consecutive
    function calls join the assistant message before them."""
    out: list[Message] = [Message("system", [TextPart(instructions)])] if instructions else []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            out.append(Message(_ROLES[item["role"]], _parts(item["content"])))  # type: ignore[arg-type]
        elif kind == "function_call":
            call = ToolCall(item["call_id"], item["name"], item["arguments"])
            if out and out[-1].role == "assistant":
                out[-1].tool_calls.append(call)
            else:
                out.append(Message("assistant", [], [call]))
        elif kind == "function_call_output":
            out.append(Message("tool", _parts(item["output"]), tool_call_id=item["call_id"]))
    return out


def to_chat_request(req: ResponsesRequest, items: list[dict[str, Any]], body: dict[str, Any]) -> ChatRequest:
    """The canonical request for the conversation ``items`` (a stored one's
    and this request's); ``body`` is what an OpenAI deployment gets."""
    src = req.body
    tools = [Tool(t["name"], t.get("description"), t.get("parameters"), t.get("strict"))
             for t in src.get("tools") or [] if t.get("type") == "function"]
    only = req.only[0] if req.only else None
    messages = messages_of(items, src.get("instructions"))
    if not messages and only is None:  # (with ``only``: an OpenAI deployment's to judge, the others refuse)
        bad_value("input", "expected at least one input item.")
    dropped = [i for i in items if i.get("type") == "reasoning"]
    return ChatRequest(
        model=req.model,
        messages=messages,
        stream=req.stream,
        include_usage=True,
        max_tokens=src.get("max_output_tokens"),
        temperature=src.get("temperature"),
        top_p=src.get("top_p"),
        user=src.get("user"),
        tools=tools or None,
        tool_choice=_tool_choice(src.get("tool_choice")),
        parallel_tool_calls=src.get("parallel_tool_calls"),
        response_format=_text_format(src.get("text")),
        reasoning_effort=_reasoning(src.get("reasoning")),
        origin=Origin("openai.responses", body, only=only,
                      uncarried_bytes=len(orjson.dumps(dropped)) if dropped else 0),
    )
