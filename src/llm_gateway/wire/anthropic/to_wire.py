"""Canonical chat requests → Anthropic Messages API request bodies.

What changes on the way:

- ``system`` messages (OpenAI's system and developer roles), wherever they
  appear, are joined with blank lines into the top-level ``system`` string.
- Anthropic wants user and assistant turns to alternate, so consecutive turns
  of one role are merged; ``tool`` messages become ``tool_result`` blocks of a
  user turn (several results in a row share one turn), and an assistant's
  ``tool_calls`` become ``tool_use`` blocks with the arguments parsed.
- ``max_tokens`` is required upstream: the client's, else the deployment's
  ``max_output_tokens``.
- ``response_format`` json_object/json_schema is emulated with one forced tool
  (``JSON_TOOL``) whose input schema is the wanted schema; the decoders turn
  its input back into text content.
- ``parallel_tool_calls: false`` becomes ``disable_parallel_tool_use``.
- A reasoning effort (``reasoning.effort`` of the Responses API) turns on
  extended thinking with a budget of ``THINKING_BUDGETS[effort]`` tokens,
  kept below ``max_tokens`` (Anthropic wants at least 1024, and fewer than
  ``max_tokens``). Not when the request fixes ``temperature``/``top_p``
  (Anthropic allows no sampling change with thinking) or forces a tool
  (``response_format`` emulation included): the effort is then ignored.

Refused with 400, because Anthropic cannot do them: ``n`` > 1, ``temperature``
> 1, content parts other than text and images, ``response_format`` together
with ``tools``. Dropped, because Anthropic has no equivalent and they only
steer sampling: ``seed``, ``presence_penalty``, ``frequency_penalty`` and the
OpenAI-only fields kept in ``ChatRequest.extra`` (``logprobs``, ``store``, …).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from llm_gateway.errors import InvalidRequest
from llm_gateway.types import ChatRequest, ContentPart, ImagePart, Message, OtherPart, TextPart, ToolCall

JSON_TOOL = "json_response"
# Thinking budgets (tokens) for OpenAI's reasoning efforts; "minimal" and "none" think not.
THINKING_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384}
MIN_THINKING_BUDGET = 1024


@dataclass(slots=True, frozen=True)
class WireRequest:
    """A Messages API body, and the name of the tool that emulates
    ``response_format`` (``None`` when there is none)."""

    body: dict[str, Any]
    json_tool: str | None = None


def _unsupported(message: str, param: str, code: str = "unsupported_value") -> InvalidRequest:
    return InvalidRequest(message, code=code, param=param)


def _image(part: ImagePart, where: str) -> dict[str, Any]:
    if part.is_data_url:
        media_type, data = part.split_data_url()
        source: dict[str, Any] = {"type": "base64", "media_type": media_type, "data": data}
    elif part.url.startswith(("http://", "https://")):
        source = {"type": "url", "url": part.url}
    else:
        raise _unsupported(
            "Image URLs must be data: URLs or http(s) URLs for Anthropic models.", where, "invalid_value"
        )
    return {"type": "image", "source": source}


def _blocks(parts: list[ContentPart], where: str) -> list[dict[str, Any]]:
    """Text and image parts as content blocks; empty text is left out because
    Anthropic refuses empty text blocks."""
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(parts):
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(_image(part, f"{where}[{j}]"))
        elif isinstance(part, OtherPart):
            kind = part.raw.get("type", "unknown")
            raise _unsupported(
                f"Content parts of type {kind!r} are not supported by Anthropic models.",
                f"{where}[{j}]", "unsupported_content",
            )
    return blocks


def _tool_use(call: ToolCall, where: str) -> dict[str, Any]:
    try:
        arguments = orjson.loads(call.arguments) if call.arguments.strip() else {}
    except orjson.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise _unsupported(
            "Tool call arguments must be a JSON object for Anthropic models.", where, "invalid_value"
        )
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def _tool_result(msg: Message, where: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.tool_call_id}
    if all(isinstance(p, TextPart) for p in msg.content):
        if msg.text:
            block["content"] = msg.text
    else:
        block["content"] = _blocks(msg.content, where)
    return block


def _input_schema(schema: dict[str, Any] | None) -> dict[str, Any]:
    """Anthropic requires ``{"type": "object", …}``; OpenAI also accepts ``{}``."""
    if not schema:
        return {"type": "object"}
    return schema if "type" in schema else {"type": "object", **schema}


def _system(messages: list[Message]) -> str | None:
    texts: list[str] = []
    for i, msg in enumerate(messages):
        if msg.role != "system":
            continue
        for j, part in enumerate(msg.content):
            if not isinstance(part, TextPart):
                raise _unsupported(
                    "System messages may contain only text for Anthropic models.",
                    f"messages[{i}].content[{j}]", "unsupported_content",
                )
        if msg.text:
            texts.append(msg.text)
    return "\n\n".join(texts) if texts else None


def _turns(messages: list[Message]) -> list[dict[str, Any]]:
    """User/assistant turns, merged so that roles alternate."""
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}].content"
        if msg.role == "system":
            continue
        if msg.role == "tool":
            role, blocks = "user", [_tool_result(msg, where)]
        else:
            role, blocks = msg.role, _blocks(msg.content, where)
            blocks += [_tool_use(t, f"messages[{i}].tool_calls[{k}].function.arguments")
                       for k, t in enumerate(msg.tool_calls)]
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        content = turn["content"]
        if len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return turns


def _tool_choice(req: ChatRequest) -> dict[str, Any] | None:
    tc = req.tool_choice
    if tc is None or tc.mode == "auto":
        choice: dict[str, Any] = {"type": "auto"}
    elif tc.mode == "none":
        return {"type": "none"}
    elif tc.mode == "required":
        choice = {"type": "any"}
    else:
        choice = {"type": "tool", "name": tc.name}
    if req.parallel_tool_calls is False:
        choice["disable_parallel_tool_use"] = True
    elif tc is None:
        return None  # Anthropic's default is auto
    return choice


def _check(req: ChatRequest) -> None:
    if req.n is not None and req.n > 1:
        raise _unsupported("Anthropic models return one choice per request; n must be 1.", "n")
    if req.temperature is not None and req.temperature > 1:
        raise _unsupported("temperature must be between 0 and 1 for Anthropic models.", "temperature")
    rf = req.response_format
    if rf is not None and rf.type != "text" and req.tools:
        raise _unsupported(
            "response_format cannot be combined with tools for Anthropic models.",
            "response_format", "unsupported_parameter",
        )
    tc = req.tool_choice
    if tc is not None and tc.mode in ("required", "named") and not req.tools:
        raise _unsupported("tool_choice requires tools.", "tool_choice", "missing_field")


def messages_body(req: ChatRequest, model: str, default_max_tokens: int) -> WireRequest:
    """The Messages API body for ``req`` sent to ``model``. Never mutates ``req``
    (a retry on another deployment reuses it)."""
    _check(req)
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": req.max_tokens if req.max_tokens is not None else default_max_tokens,
    }
    system = _system(req.messages)
    if system is not None:
        body["system"] = system
    turns = _turns(req.messages)
    if not turns:
        raise InvalidRequest(
            "Anthropic models need at least one non-empty user or assistant message.",
            code="invalid_value", param="messages",
        )
    body["messages"] = turns
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        body["stop_sequences"] = list(req.stop)
    if req.user is not None:
        body["metadata"] = {"user_id": req.user}
    json_tool: str | None = None
    rf = req.response_format
    if rf is not None and rf.type != "text":
        json_tool = JSON_TOOL
        description = "Give the final answer as this tool's input, which must match its schema."
        if rf.name:
            description += f" The schema is named {rf.name!r}."
        schema = _input_schema(rf.schema if rf.type == "json_schema" else None)
        body["tools"] = [{"name": JSON_TOOL, "description": description, "input_schema": schema}]
        body["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
    elif req.tools:
        tools = []
        for t in req.tools:
            tool: dict[str, Any] = {"name": t.name}
            if t.description is not None:
                tool["description"] = t.description
            tool["input_schema"] = _input_schema(t.parameters)
            tools.append(tool)
        body["tools"] = tools
        choice = _tool_choice(req)
        if choice is not None:
            body["tool_choice"] = choice
    thinking = _thinking(req, body)
    if thinking is not None:
        body["thinking"] = thinking
    if req.stream:
        body["stream"] = True
    return WireRequest(body, json_tool)


def _thinking(req: ChatRequest, body: dict[str, Any]) -> dict[str, Any] | None:
    budget = THINKING_BUDGETS.get(req.reasoning_effort or "")
    if budget is None or req.temperature not in (None, 1) or req.top_p is not None:
        return None
    if body.get("tool_choice", {}).get("type") in ("tool", "any"):
        return None
    budget = min(budget, int(body["max_tokens"]) - 1)
    return {"type": "enabled", "budget_tokens": budget} if budget >= MIN_THINKING_BUDGET else None
