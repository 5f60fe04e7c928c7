"""A fake OpenAI API on 127.0.0.1 that speaks the real wire format
(Chat Completions with SSE, Embeddings, Models, and real error bodies).

It records what it receives (``app.state.requests``) and answers
deterministically. The last user message steers it:
``fake-error:<status>`` answers that status with the real error body,
``fake-error:garbage`` answers 200 with a body that is not JSON,
``fake-error:hang`` waits 30 s, ``fake-error:midstream`` cuts a stream
after its first chunks without ``[DONE]``, ``fake-delay:<ms>`` answers
normally after that many milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests import fixtures
from tests.fakes import openai_responses

WIRE = fixtures.WIRE / "openai"
API_KEY = "sk-test-openai"

_ERRORS = {
    400: "error-400-context-length-exceeded.assembled.json",
    401: "error-401-invalid-api-key.assembled.json",
    404: "error-404-model-not-found.json",
    429: "error-429-rate-limit-exceeded.assembled.json",
    500: "error-500-server-error.assembled.json",
}


def _wire(name: str) -> Any:
    return json.loads((WIRE / name).read_text())


def _error(status: int) -> Response:
    body = _wire(_ERRORS[status]) if status in _ERRORS else {
        "error": {"message": f"Fake error {status}", "type": "server_error", "param": None, "code": None}
    }
    headers = {"retry-after": "1"} if status == 429 else {}
    return JSONResponse(body, status_code=status, headers=headers)


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _schema_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "x"
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _schema_value(props[k]) for k in (schema.get("required") or list(props))}
    if kind == "array":
        return [_schema_value(schema.get("items"))]
    return {"integer": 7, "number": 2.5, "boolean": True}.get(str(kind), "Paris")


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    """The assistant message (content or tool_calls) and finish reason."""
    messages = body["messages"]
    last = messages[-1]
    tools = body.get("tools") or []
    if tools and body.get("tool_choice") != "none" and last.get("role") != "tool":
        tool = tools[0]["function"]
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            tool = next(t["function"] for t in tools if t["function"]["name"] == choice["function"]["name"])
        args = json.dumps(_schema_value(tool.get("parameters") or {"type": "object"}))
        call = {"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
                "function": {"name": tool["name"], "arguments": args}}
        return {"content": None, "tool_calls": [call], "finish_reason": "tool_calls"}
    if last.get("role") == "tool":
        return {"content": f"The tool said: {_text_of(last)}", "finish_reason": "stop"}
    user = _text_of(last)
    images = [p for p in last.get("content") or [] if isinstance(p, dict) and p.get("type") == "image_url"]
    rf = body.get("response_format") or {}
    if rf.get("type") == "json_object":
        return {"content": json.dumps({"echo": user}), "finish_reason": "stop"}
    if rf.get("type") == "json_schema":
        return {"content": json.dumps(_schema_value(rf["json_schema"].get("schema"))), "finish_reason": "stop"}
    if images:
        return {"content": f"I see {len(images)} image(s). {user}", "finish_reason": "stop"}
    text = f"Hello from fake OpenAI: {user}"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None and len(text.split()) > limit:
        return {"content": " ".join(text.split()[:limit]), "finish_reason": "length"}
    return {"content": text, "finish_reason": "stop"}


def _usage(body: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    prompt = sum(len(_text_of(m).split()) + 4 for m in body["messages"])
    completion = len((answer.get("content") or "").split()) or 9
    cached = 64 if "cached" in _text_of(body["messages"][0]) else 0
    return {
        "prompt_tokens": prompt + cached, "completion_tokens": completion,
        "total_tokens": prompt + cached + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


async def _check(request: Request) -> tuple[dict[str, Any] | None, Response | None]:
    # Bearer auth as OpenAI, or Azure OpenAI's "api-key" header.
    if request.headers.get("authorization") != f"Bearer {API_KEY}" and request.headers.get("api-key") != API_KEY:
        return None, _error(401)
    body = json.loads(await request.body())
    request.app.state.requests.append({"path": request.url.path, "body": body, "query": dict(request.query_params),
                                       "headers": dict(request.headers)})
    return body, None


async def chat(request: Request) -> Response:
    body, err = await _check(request)
    if err is not None or body is None:
        return err or _error(400)
    if body.get("model", "").startswith("missing"):
        return _error(404)
    steer = _text_of(body["messages"][-1])
    if "fake-delay:" in steer:
        delay = steer.split("fake-delay:", 1)[1].split()[0]
        if delay.isdigit():
            await asyncio.sleep(min(int(delay), 30_000) / 1000)
    if "fake-error:" in steer:
        what = steer.split("fake-error:", 1)[1].split()[0]
        if what.isdigit():
            return _error(int(what))
        if what == "garbage":
            return Response(b"<html>not json</html>", media_type="application/json")
        if what == "hang":
            await asyncio.sleep(30)
        if what == "slowstream":
            return StreamingResponse(_slow_stream(request.app), media_type="text/event-stream")
    answer = _answer(body)
    usage = _usage(body, answer)
    cid = "chatcmpl-" + uuid.uuid4().hex[:29]
    created = int(time.time())
    model = body["model"] + "-2024-07-18"
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        gen = _stream(cid, created, model, answer, usage if include_usage else None,
                      midstream="fake-error:midstream" in steer, n=body.get("n") or 1)
        return StreamingResponse(gen, media_type="text/event-stream")
    message: dict[str, Any] = {"role": "assistant", "content": answer["content"], "refusal": None,
                               "annotations": []}
    if answer.get("tool_calls"):
        message["tool_calls"] = answer["tool_calls"]
    choices = [{"index": i, "message": message, "logprobs": None, "finish_reason": answer["finish_reason"]}
               for i in range(body.get("n") or 1)]
    return JSONResponse({
        "id": cid, "object": "chat.completion", "created": created, "model": model,
        "choices": choices, "usage": usage, "service_tier": "default", "system_fingerprint": "fp_fake",
    })


async def _stream(
    cid: str, created: int, model: str, answer: dict[str, Any], usage: dict[str, Any] | None,
    *, midstream: bool, n: int,
) -> AsyncIterator[bytes]:
    head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "service_tier": "default", "system_fingerprint": "fp_fake"}

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {**head, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]}
        if usage is not None:
            data["usage"] = None
        return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

    for index in range(n):
        if answer.get("tool_calls"):
            call = answer["tool_calls"][0]
            yield chunk(index, {"role": "assistant", "content": None, "tool_calls": [{
                "index": 0, "id": call["id"], "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""}}], "refusal": None})
            args = call["function"]["arguments"]
            for i in range(0, len(args), 4):
                yield chunk(index, {"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 4]}}]})
                await asyncio.sleep(0)
        else:
            yield chunk(index, {"role": "assistant", "content": "", "refusal": None})
            for i, word in enumerate((answer["content"] or "").split(" ")):
                if midstream and i == 2:
                    return
                yield chunk(index, {"content": (" " if i else "") + word})
                await asyncio.sleep(0)
        yield chunk(index, {}, answer["finish_reason"])
    if usage is not None:
        data = {**head, "choices": [], "usage": usage}
        yield b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


async def _slow_stream(app: Any) -> AsyncIterator[bytes]:
    """One chunk every 50 ms for 20 s; notes when the client went away."""
    head = {"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 0, "model": "slow"}
    try:
        for i in range(400):
            data = {**head, "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
            yield b"data: " + json.dumps(data).encode() + b"\n\n"
            await asyncio.sleep(0.05)
    finally:
        app.state.stream_cancelled_at = time.monotonic()


async def embeddings(request: Request) -> Response:
    body, err = await _check(request)
    if err is not None or body is None:
        return err or _error(400)
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    dims = body.get("dimensions") or 4
    data = [{"object": "embedding", "index": i,
             "embedding": [round(((len(str(x)) + k) % 10) / 10, 3) for k in range(dims)]}
            for i, x in enumerate(inputs)]
    tokens = sum(len(str(x).split()) for x in inputs)
    return JSONResponse({"object": "list", "data": data, "model": body["model"],
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


# A 1×1 PNG, served so that tests can send an http image URL.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e7a1b0e10000000049454e44ae426082"
)


async def image(request: Request) -> Response:
    return Response(PNG, media_type="image/png")


async def models(request: Request) -> Response:
    return JSONResponse(_wire("models-list.spec.json"))


def create_app() -> Starlette:
    app = Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/responses", openai_responses.responses, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/image.png", image, methods=["GET"]),
    ])
    app.state.requests = []
    app.state.stream_cancelled_at = None
    return app
