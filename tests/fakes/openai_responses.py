"""The fake OpenAI's ``POST /v1/responses``: OpenAI's documented Responses
wire format (a ``response`` object, or its event stream), answered from the
same deterministic rules as its chat completions (``openai_server._answer``).
It keeps no state: a ``previous_response_id`` it receives is a 400, as for
an id OpenAI does not know, so a test sees that the gateway never relies on
it. ``fake-error:midstream`` cuts a stream after its first events."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and "text" in p)


def _as_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The request as chat messages and tools, for ``_answer``."""
    items = body["input"]
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item["role"], "content": _text(item["content"])})
        elif kind == "function_call":
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": item["call_id"], "type": "function",
                 "function": {"name": item["name"], "arguments": item["arguments"]}}]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _text(item["output"])})
    tools = [{"type": "function", "function": {"name": t["name"], "parameters": t.get("parameters")}}
             for t in body.get("tools") or [] if t.get("type") == "function"]
    chat: dict[str, Any] = {"messages": messages, "tools": tools}
    choice = body.get("tool_choice")
    chat["tool_choice"] = {"function": {"name": choice["name"]}} if isinstance(choice, dict) else choice
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {"schema": fmt.get("schema")}}
    elif fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    if body.get("max_output_tokens"):
        chat["max_tokens"] = body["max_output_tokens"]
    return chat


def _response(body: dict[str, Any], answer: dict[str, Any], usage: dict[str, Any], rid: str) -> dict[str, Any]:
    output: list[dict[str, Any]] = [{"type": "reasoning", "id": f"rs_{rid}", "summary": []}]
    if answer.get("content") is not None:
        output.append({"type": "message", "id": f"msg_{rid}", "status": "completed", "role": "assistant",
                       "content": [{"type": "output_text", "text": answer["content"], "annotations": [],
                                    "logprobs": []}]})
    for call in answer.get("tool_calls") or []:
        output.append({"type": "function_call", "id": f"fc_{call['id']}", "call_id": call["id"],
                       "name": call["function"]["name"], "arguments": call["function"]["arguments"],
                       "status": "completed"})
    incomplete = answer["finish_reason"] == "length"
    return {
        "id": f"resp_{rid}", "object": "response", "created_at": int(time.time()),
        "status": "incomplete" if incomplete else "completed", "background": False, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"], "output": output, "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}}, "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [], "top_p": body.get("top_p", 1.0), "truncation": "disabled",
        "metadata": body.get("metadata") or {},
        "usage": {"input_tokens": usage["prompt_tokens"],
                  "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                  "output_tokens": usage["completion_tokens"] + 3,
                  "output_tokens_details": {"reasoning_tokens": 3},
                  "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"] + 3},
    }


async def _events(final: dict[str, Any], cut: bool) -> AsyncIterator[bytes]:
    seq = 0

    def event(kind: str, **data: Any) -> bytes:
        nonlocal seq
        seq += 1
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': seq - 1, **data})}\n\n".encode()

    start = {k: v for k, v in final.items() if k != "usage"} | {"status": "in_progress", "output": [],
                                                                "incomplete_details": None}
    yield event("response.created", response=start)
    yield event("response.in_progress", response=start)
    for index, item in enumerate(final["output"]):
        if item["type"] == "message":
            text = item["content"][0]["text"]
            yield event("response.output_item.added", output_index=index,
                        item={**item, "status": "in_progress", "content": []})
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            yield event("response.content_part.added", item_id=item["id"], output_index=index, content_index=0,
                        part=part)
            for word in text.split(" "):
                yield event("response.output_text.delta", item_id=item["id"], output_index=index, content_index=0,
                            delta=word + " ", logprobs=[])
                if cut:
                    return
            yield event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                        text=text, logprobs=[])
            yield event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                        part={**part, "text": text})
        elif item["type"] == "function_call":
            yield event("response.output_item.added", output_index=index,
                        item={**item, "status": "in_progress", "arguments": ""})
            yield event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                        delta=item["arguments"])
            yield event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                        name=item["name"], arguments=item["arguments"])
        else:
            yield event("response.output_item.added", output_index=index, item=item)
        yield event("response.output_item.done", output_index=index, item=item)
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    yield event(kind, response=final)


async def responses(request: Request) -> Response:
    from tests.fakes.openai_server import _answer, _check, _error, _usage

    body, err = await _check(request)
    if err is not None or body is None:
        return err or _error(400)
    if body.get("previous_response_id"):
        return JSONResponse({"error": {"message": "Previous response not found.", "type": "invalid_request_error",
                                       "param": "previous_response_id", "code": "previous_response_not_found"}},
                            status_code=400)
    chat = _as_chat(body)
    last = _text(chat["messages"][-1].get("content")) if chat["messages"] else ""
    if "fake-error:" in last and "midstream" not in last:
        return _error(int(last.split("fake-error:")[1].split()[0]))
    answer = _answer(chat)
    final = _response(body, answer, _usage(chat, answer), uuid.uuid4().hex[:24])
    if body.get("stream"):
        return StreamingResponse(_events(final, "midstream" in last), media_type="text/event-stream")
    return JSONResponse(final)
