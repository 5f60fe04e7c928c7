"""A fake Anthropic Messages API (``POST /v1/messages``) for tests.

It speaks the recorded wire format of ``tests/fixtures/wire/anthropic`` (bodies,
error bodies, SSE framing ``event: …\\ndata: …\\n\\n``), checks what the real
API checks that a translator can get wrong, records every request, and answers
deterministically, steered by the last user turn:

- ``fake-error:<status>`` (400, 401, 404, 429, 500, 529) answers that status
  with the real error body (429 with ``retry-after: 1``);
  ``fake-error:midstream`` sends an ``error`` event after the first text delta
  of a stream; ``fake-error:truncated`` ends a stream after it, with no
  ``message_stop``; ``fake-error:nousage`` leaves ``usage`` out of a message.
- With ``tools`` (and ``tool_choice`` not ``none``) and no ``tool_result`` in
  the last user turn: a ``tool_use`` of the forced (else first) tool, its input
  built from the tool's schema.
- With ``tool_result`` blocks in the last user turn: text quoting them.
- With ``output_config.format`` (a JSON schema): JSON text built from it.
- Otherwise: ``Hello from fake Anthropic: <last user text>``.

``max_tokens`` cuts the answer (one token a word, ``stop_reason:
"max_tokens"``); ``stop_sequences`` cut it too. A system prompt containing
"cached" reports cache reads and writes in usage.

Use: ``app = create_app(api_key="k")``; ``serve_in_thread(app)``; then read
``app.state.requests`` (bodies) and ``app.state.headers``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# Error bodies as recorded (429, 400) or assembled from documented shapes
# (401, 500, 529), from tests/fixtures/wire/anthropic/error-*.json.
ERROR_BODIES: dict[int, dict[str, Any]] = {
    400: {"type": "error", "error": {"type": "invalid_request_error", "message": (
        "messages.0.content.1: unexpected `tool_use_id` found in `tool_result` blocks: "
        "toolu_01GHndag5wQmbzNihYmV2UBj. Each `tool_result` block must have a corresponding "
        "`tool_use` block in the previous message.")}, "request_id": "req_011CYHyk9NPsBYeGbC9LuDNK"},
    401: {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"},
          "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"},
    404: {"error": {"message": "model: claude-does-not-exist", "type": "not_found_error"},
          "request_id": "req_011CVEA3SF7rnb3DuBZytqQa", "type": "error"},
    429: {"type": "error", "error": {"type": "rate_limit_error", "message": (
        "This request would exceed your organization's rate limit of 20,000,000 prompt bytes per hour "
        "(org: 5576611f-a1ee-427c-9800-298d9579899c, model: claude-sonnet-4-5-20250929). For details, "
        "refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for "
        "current usage. Please reduce the prompt length or the maximum tokens requested, or try again "
        "later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your "
        "options for a rate limit increase.")}, "request_id": "req_011CYK5mje9HkutJtmfPzzNC"},
    500: {"type": "error", "error": {"type": "api_error", "message": "Internal server error"},
          "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"},
    529: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"},
          "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"},
}
OVERLOADED_EVENT = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
_TOP_LEVEL = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature",
    "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier", "output_config", "cache_control",
    "inference_geo", "speed", "diagnostics", "container", "context_management",
})
_STEER = re.compile(r"fake-error:(\w+)")


class _Invalid(Exception):
    """A request the real API would refuse with 400 invalid_request_error."""


def _error(status: int, body: dict[str, Any] | None = None) -> Response:
    body = body or ERROR_BODIES[status]
    headers = {"request-id": str(body.get("request_id", "req_fake")),
               "x-should-retry": "true" if status in (429, 500, 529) else "false"}
    if status == 429:
        headers["retry-after"] = "1"
    return JSONResponse(body, status_code=status, headers=headers)


def _invalid(message: str) -> Response:
    return _error(400, {"type": "error", "error": {"type": "invalid_request_error", "message": message},
                        "request_id": "req_fake_invalid"})


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _check(body: dict[str, Any]) -> None:
    """The checks of the real API that a translator can trip over."""
    for key in body:
        if key not in _TOP_LEVEL:
            raise _Invalid(f"{key}: Extra inputs are not permitted")
    if "max_tokens" not in body:
        raise _Invalid("max_tokens: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Invalid("messages: at least one message is required")
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        raise _Invalid("temperature: Input should be less than or equal to 1")
    previous_role = None
    previous_tool_ids: set[str] = set()
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role == previous_role:
            raise _Invalid(f'messages: roles must alternate between "user" and "assistant", '
                           f'but found multiple "{role}" roles in a row')
        tool_ids: set[str] = set()
        for j, block in enumerate(_blocks(msg.get("content"))):
            if block.get("type") == "text" and not block.get("text"):
                raise _Invalid(f"messages.{i}.content.{j}.text: text content blocks must be non-empty")
            if block.get("type") == "tool_use":
                if not isinstance(block.get("input"), dict):
                    raise _Invalid(f"messages.{i}.content.{j}.tool_use.input: Input should be an object")
                tool_ids.add(block["id"])
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in previous_tool_ids:
                raise _Invalid(f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                               f"blocks: {block.get('tool_use_id')}. Each `tool_result` block must have a "
                               f"corresponding `tool_use` block in the previous message.")
        previous_role, previous_tool_ids = role, tool_ids
    for k, tool in enumerate(body.get("tools") or []):
        if tool.get("type", "custom") != "custom":
            continue  # a server tool (web search, code execution, …): no schema
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise _Invalid(f"tools.{k}.custom.input_schema.type: Input should be 'object'")


def _schema_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "fake"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: _schema_value(props.get(k)) for k in schema.get("required") or list(props)}
    return {"array": [_schema_value(schema.get("items"))], "integer": 1, "number": 1.5, "boolean": True,
            "null": None}.get(kind, "fake") if isinstance(kind, str) else "fake"


class _Answer:
    """What the fake answers to one request (pure, deterministic)."""

    def __init__(self, body: dict[str, Any]) -> None:
        last = body["messages"][-1]
        blocks = _blocks(last.get("content")) if last.get("role") == "user" else []
        self.user_text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        steer = _STEER.search(self.user_text)
        self.steer = steer.group(1) if steer else None
        digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()
        self.id = f"msg_fake{digest[:20]}"
        self.model = str(body.get("model", ""))
        results = [b for b in blocks if b.get("type") == "tool_result"]
        choice = (body.get("tool_choice") or {}).get("type", "auto")
        self.tool: dict[str, Any] | None = None
        self.text = ""
        self.stop_reason = "end_turn"
        self.stop_sequence: str | None = None
        tools = [t for t in body.get("tools") or [] if t.get("type", "custom") == "custom"]
        if tools and choice != "none" and not results:
            forced = (body.get("tool_choice") or {}).get("name")
            tool = next((t for t in tools if t["name"] == forced), tools[0])
            self.tool = {"type": "tool_use", "id": f"toolu_fake{digest[20:40]}", "name": tool["name"],
                         "input": _schema_value(tool.get("input_schema"))}
            self.stop_reason = "tool_use"
        elif results:
            quoted = [r.get("content") if isinstance(r.get("content"), str) else json.dumps(r.get("content"))
                      for r in results]
            self.text = "The tool said: " + " | ".join(q or "" for q in quoted)
        elif isinstance((body.get("output_config") or {}).get("format"), dict):
            self.text = json.dumps(_schema_value(body["output_config"]["format"].get("schema")))
        else:
            self.text = f"Hello from fake Anthropic: {self.user_text}"
        for stop in body.get("stop_sequences") or []:
            if stop and stop in self.text:
                self.text = self.text[: self.text.index(stop)]
                self.stop_reason, self.stop_sequence = "stop_sequence", stop
                break
        self.words = re.findall(r"\S+\s*", self.text)
        if len(self.words) > body["max_tokens"]:
            self.words = self.words[: body["max_tokens"]]
            self.text = "".join(self.words)
            self.stop_reason = "max_tokens"
        system = body.get("system")
        system_text = system if isinstance(system, str) else json.dumps(system or "")
        prompt_words = prompt_tokens(body)
        cached = "cached" in system_text
        self.usage = {
            "input_tokens": prompt_words,
            "cache_creation_input_tokens": 20 if cached else 0,
            "cache_read_input_tokens": 100 if cached else 0,
            "output_tokens": len(self.words) + (len(json.dumps(self.tool["input"])) // 4 if self.tool else 0),
        }

    def message(self) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": self.text}] if self.text else []
        if self.tool:
            content.append(self.tool)
        return {"model": self.model, "id": self.id, "type": "message", "role": "assistant",
                "content": content, "stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence,
                "usage": {**self.usage, "service_tier": "standard"}}


def _event(data: dict[str, Any]) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream(answer: _Answer) -> AsyncIterator[bytes]:
    start = {**answer.message(), "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**answer.usage, "output_tokens": 1}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    index = 0
    if answer.text:
        events.append({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        events.append({"type": "ping"})
        events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}
                   for w in answer.words]
        events.append({"type": "content_block_stop", "index": 0})
        index = 1
    if answer.tool:
        block = {**answer.tool, "input": {}}
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        if index == 0:
            events.append({"type": "ping"})
        text = json.dumps(answer.tool["input"])
        pieces = [""] + [text[i : i + 7] for i in range(0, len(text), 7)]
        events += [{"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": p}} for p in pieces]
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta",
                   "delta": {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence},
                   "usage": answer.usage})
    events.append({"type": "message_stop"})
    text_deltas = 0
    for event in events:
        yield _event(event)
        await asyncio.sleep(0)
        if event["type"] == "content_block_delta" and event["delta"]["type"] == "text_delta":
            text_deltas += 1
            if text_deltas == 1 and answer.steer == "midstream":
                yield _event(OVERLOADED_EVENT)
                return
            if text_deltas == 1 and answer.steer == "truncated":
                return


async def _messages(request: Request) -> Response:
    state = request.app.state
    state.headers.append(dict(request.headers))
    if request.headers.get("x-api-key") != state.api_key:
        return _error(401)
    if not request.headers.get("anthropic-version"):
        return _invalid("anthropic-version: header is required")
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _invalid("There was an error parsing the body.")
    state.requests.append(body)
    if not isinstance(body, dict):
        return _invalid("Input should be an object")
    try:
        _check(body)
    except _Invalid as exc:
        return _invalid(str(exc))
    answer = _Answer(body)
    if answer.steer and answer.steer.isdigit() and int(answer.steer) in ERROR_BODIES:
        return _error(int(answer.steer))
    if body.get("stream"):
        return StreamingResponse(_stream(answer), media_type="text/event-stream; charset=utf-8",
                                 headers={"cache-control": "no-cache", "request-id": "req_fake_stream"})
    message = answer.message()
    if answer.steer == "nousage":
        del message["usage"]
    return JSONResponse(message, headers={"request-id": "req_fake"})


_COUNT_FIELDS = frozenset({
    "model", "messages", "system", "tools", "tool_choice", "thinking", "output_config", "cache_control", "speed",
    "context_management",
})


def prompt_tokens(body: dict[str, Any]) -> int:
    """The fake's input token count: words of the messages' JSON and of the system prompt."""
    system = body.get("system")
    system_text = system if isinstance(system, str) else json.dumps(system or "")
    return len(json.dumps(body["messages"]).split()) + len(system_text.split())


async def _count_tokens(request: Request) -> Response:
    state = request.app.state
    if request.headers.get("x-api-key") != state.api_key:
        return _error(401)
    body = json.loads(await request.body())
    state.counted.append(body)
    extra = [k for k in body if k not in _COUNT_FIELDS]
    if extra:
        return _invalid(f"{extra[0]}: Extra inputs are not permitted")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return _invalid("messages: at least one message is required")
    return JSONResponse({"input_tokens": prompt_tokens(body)})


def create_app(api_key: str = "test-anthropic-key") -> Starlette:
    """A new fake with its own request log (``app.state.requests``, ``.headers``;
    ``.counted`` for ``/v1/messages/count_tokens``)."""
    app = Starlette(routes=[Route("/v1/messages", _messages, methods=["POST"]),
                            Route("/v1/messages/count_tokens", _count_tokens, methods=["POST"])])
    app.state.api_key = api_key
    app.state.counted = []
    app.state.requests = []
    app.state.headers = []
    return app
