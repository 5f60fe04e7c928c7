"""Canonical answers → OpenAI Responses API ``response`` objects and event
streams.

Whatever model served it, a ``/v1/responses`` client gets a ``response``:
its ``output`` is a ``message`` item (``output_text``, or ``refusal``) and
one ``function_call`` item per tool call of the first choice; ``usage`` has
``input_tokens`` (cached ones included, as ``input_tokens_details``) and
``output_tokens`` (reasoning included); a ``length`` or ``content_filter``
finish is ``status: incomplete`` with its ``incomplete_details``.

A stream is OpenAI's event sequence, each event with its
``sequence_number``: ``response.created``, ``response.in_progress``, then per
output item ``response.output_item.added`` (and for text
``response.content_part.added``, ``response.output_text.delta``…
``.done``, ``response.content_part.done``; for a call
``response.function_call_arguments.delta``… ``.done``),
``response.output_item.done``, and last ``response.completed`` (or
``response.incomplete``) with the whole response. A failure after the first
byte is an ``error`` event and then ``response.failed``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from llm_gateway.errors import GatewayError
from llm_gateway.types import (
    ChatResponse,
    FinishDelta,
    FinishReason,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)


def encode_usage(usage: Usage | None) -> dict[str, Any]:
    usage = usage or Usage()
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_input_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request's settings, as a ``response`` repeats them."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    given = body.get("reasoning")
    reasoning: dict[str, Any] = given if isinstance(given, dict) else {}
    echo = {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": fmt or {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
    }
    if isinstance(body.get("user"), str):
        echo["user"] = body["user"]
    return echo


def _status(finish: FinishReason | None) -> tuple[str, dict[str, str] | None]:
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_object(
    response_id: str, model: str, body: dict[str, Any], output: list[dict[str, Any]], usage: Usage | None,
    status: str, incomplete: dict[str, str] | None = None, error: dict[str, str] | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    out = {
        "id": response_id, "object": "response", "created_at": created_at or int(time.time()), "status": status,
        "background": False, "error": error, "incomplete_details": incomplete, "model": model, "output": output,
        **_echo(body),
    }
    if status != "in_progress":
        out["usage"] = encode_usage(usage)
    return out


def _message_item(item_id: str, text: str, refusal: str | None, status: str = "completed") -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text or not refusal:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def encode_response(resp: ChatResponse, response_id: str, model: str, body: dict[str, Any]) -> dict[str, Any]:
    """A non-streamed answer (its first choice) as a ``response``."""
    output: list[dict[str, Any]] = []
    finish: FinishReason | None = "stop"
    if resp.choices:
        choice = resp.choices[0]
        finish = choice.finish_reason
        if choice.text or choice.refusal or not choice.tool_calls:
            output.append(_message_item(f"msg_{response_id}", choice.text or "", choice.refusal))
        output += [_call_item(f"fc_{response_id}_{i}", t.id, t.name, t.arguments)
                   for i, t in enumerate(choice.tool_calls)]
    status, incomplete = _status(finish)
    return response_object(response_id, resp.model or model, body, output, resp.usage, status, incomplete)


def _frame(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ResponseStreamEncoder:
    """Canonical stream events → the Responses API's SSE events (first
    choice only). Holds the output items as they grow, so the final event
    carries the whole ``response`` (``final``, also what is stored)."""

    def __init__(self, response_id: str, model: str, body: dict[str, Any]) -> None:
        self.response_id = response_id
        self.model = model
        self.body = body
        self.created_at = int(time.time())
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self._open: int | None = None  # the output index of the item being written
        self._text: list[str] = []
        self._tools: dict[int, int] = {}  # tool index → output index
        self._args: dict[int, list[str]] = {}  # output index → argument pieces
        self.finish: FinishReason | None = None
        self.usage: Usage | None = None
        self.final: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return _frame(kind, data)

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(self.response_id, self.model, self.body, self.output, self.usage, status,
                               created_at=self.created_at, **extra)

    def start(self) -> bytes:
        snapshot = self._response("in_progress")
        return (self._event("response.created", response=snapshot)
                + self._event("response.in_progress", response=snapshot))

    def encode(self, events: list[StreamEvent]) -> bytes:
        return b"".join(self._one(e) for e in events)

    def _close(self) -> bytes:
        index, self._open = self._open, None
        if index is None:
            return b""
        item = self.output[index]
        if item["type"] == "message":
            text = "".join(self._text)
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item.update(status="completed", content=[part])
            out = self._event("response.output_text.done", item_id=item["id"], output_index=index,
                              content_index=0, text=text, logprobs=[])
            out += self._event("response.content_part.done", item_id=item["id"], output_index=index,
                               content_index=0, part=part)
        else:
            item.update(status="completed", arguments="".join(self._args[index]))
            out = self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                              name=item["name"], arguments=item["arguments"])
        return out + self._event("response.output_item.done", output_index=index, item=item)

    def _add(self, item: dict[str, Any]) -> bytes:
        out = self._close()
        self._open = len(self.output)
        self.output.append(item)
        return out + self._event("response.output_item.added", output_index=self._open, item=dict(item))

    def _one(self, event: StreamEvent) -> bytes:
        if isinstance(event, UsageDelta):
            self.usage = event.usage
            return b""
        if isinstance(event, FinishDelta):
            if event.index == 0:
                self.finish = event.reason
            return b""
        if event.index != 0:
            return b""
        if isinstance(event, TextDelta):
            out = b""
            if self._open is None or self.output[self._open]["type"] != "message":
                self._text = []
                item = _message_item(f"msg_{self.response_id}_{len(self.output)}", "", None, "in_progress")
                item["content"] = []
                out = self._add(item)
                out += self._event("response.content_part.added", item_id=item["id"], output_index=self._open,
                                   content_index=0,
                                   part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            self._text.append(event.text)
            index = self._open
            assert index is not None
            return out + self._event("response.output_text.delta", item_id=self.output[index]["id"],
                                     output_index=index, content_index=0, delta=event.text, logprobs=[])
        if isinstance(event, ToolCallDelta):
            out = b""
            if event.tool_index not in self._tools:
                item = _call_item(f"fc_{self.response_id}_{len(self.output)}",
                                  event.id or f"call_{self.response_id}_{event.tool_index}", event.name or "", "",
                                  "in_progress")
                out = self._add(item)
                assert self._open is not None
                self._tools[event.tool_index] = self._open
                self._args[self._open] = []
            index = self._tools[event.tool_index]
            if not event.arguments:
                return out
            self._args[index].append(event.arguments)
            return out + self._event("response.function_call_arguments.delta", item_id=self.output[index]["id"],
                                     output_index=index, delta=event.arguments)
        return b""

    def finish_stream(self) -> bytes:
        out = self._close()
        if not self.output:  # an empty answer is still one (empty) message
            out += self._add(_message_item(f"msg_{self.response_id}_0", "", None, "in_progress"))
            self._text = []
            out += self._close()
        status, incomplete = _status(self.finish)
        self.final = self._response(status, incomplete=incomplete)
        return out + self._event("response.incomplete" if status == "incomplete" else "response.completed",
                                 response=self.final)

    def error(self, exc: GatewayError) -> bytes:
        """A failure after the first byte: an ``error`` event, then ``response.failed``."""
        err = exc.to_openai()["error"]
        code = str(err.get("code") or "server_error")
        out = self._event("error", code=code, message=str(err.get("message")), param=err.get("param"))
        failed = self._response("failed", error={"code": "server_error", "message": str(err.get("message"))})
        return out + self._event("response.failed", response=failed)
