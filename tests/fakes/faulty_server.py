"""A fault-injecting fake OpenAI API on 127.0.0.1, for the routing tests.

It speaks OpenAI's wire format (Chat Completions, streamed or not, and
Embeddings, with usage) and fails on purpose as a test plans it, per upstream
model name (``app.state.plans[model] = Plan(...)``):

- ``fail_first``: the first N calls fail; ``fail_rate``: a share of the rest,
  at random (seeded, so a run repeats);
- ``failure``: how a call fails — an HTTP status (``"500"``, ``"503"``,
  ``"529"``, ``"429"``, ``"400"`` …, with the real error body and
  ``retry_after`` as a header when set), ``"garbage"`` (200 with a body that is
  not JSON, or not SSE), ``"hang"`` (no answer for ``hang_s``), ``"stall"``
  (a stream sends ``cut_after`` chunks, then nothing for ``hang_s``),
  ``"cut"`` (a stream ends after ``cut_after`` chunks, without ``[DONE]``; a
  plain answer stops half-way), ``"disconnect"`` (the connection drops
  half-way through the answer);
- ``latency_s``: every answer waits this long first; ``chunk_gap_s``: a
  stream waits this long between chunks.

``app.state.calls[model]`` counts the calls, ``app.state.failures[model]``
the failed ones, ``app.state.times[model]`` when each call arrived
(monotonic), ``app.state.log`` every call's ``(model, x-request-id)`` in
order. An answer's text names the model that served it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

API_KEY = "sk-test-faulty"
PROMPT_TOKENS = 10
COMPLETION_TOKENS = 5


@dataclass
class Plan:
    fail_first: int = 0
    fail_rate: float = 0.0
    failure: str = "500"
    retry_after: float | None = None
    cut_after: int = 2
    hang_s: float = 10.0
    latency_s: float = 0.0
    chunk_gap_s: float = 0.0


def _error(status: int, retry_after: float | None) -> Response:
    kind = {429: "requests", 400: "invalid_request_error"}.get(status, "server_error")
    code = {429: "rate_limit_exceeded", 400: "context_length_exceeded"}.get(status)
    body = {"error": {"message": f"Injected failure {status}", "type": kind, "param": None, "code": code}}
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
    return JSONResponse(body, status_code=status, headers=headers)


def _words(model: str) -> list[str]:
    return ["served", "by", model, "ok", "done"]


def _usage() -> dict[str, Any]:
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}


def _completion(model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-faulty", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(_words(model))},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(),
    }


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def _stream(model: str, include_usage: bool, failure: str | None, plan: Plan) -> AsyncIterator[bytes]:
    head = {"id": "chatcmpl-faulty", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    pieces = [{"role": "assistant", "content": ""}] + [{"content": w + " "} for w in _words(model)]
    for i, delta in enumerate(pieces):
        if failure in ("cut", "stall", "disconnect") and i == plan.cut_after:
            if failure == "stall":
                await asyncio.sleep(plan.hang_s)
            if failure == "disconnect":
                raise ConnectionResetError("injected")
            return
        yield _sse({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        await asyncio.sleep(plan.chunk_gap_s)
    yield _sse({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        yield _sse({**head, "choices": [], "usage": _usage()})
    yield b"data: [DONE]\n\n"


async def _half(body: bytes) -> AsyncIterator[bytes]:
    yield body[: len(body) // 2]
    raise ConnectionResetError("injected")


def _failing(request: Request, model: str) -> str | None:
    """Count the call; the failure it should suffer, if any."""
    state = request.app.state
    state.calls[model] += 1
    state.times[model].append(time.monotonic())
    state.log.append((model, request.headers.get("x-request-id")))
    plan: Plan = state.plans.get(model) or Plan()
    fails = state.calls[model] <= plan.fail_first or (plan.fail_rate > 0 and state.rng.random() < plan.fail_rate)
    if not fails:
        return None
    state.failures[model] += 1
    return plan.failure


async def _check(request: Request) -> tuple[dict[str, Any], str, Plan] | Response:
    if request.headers.get("authorization") != f"Bearer {API_KEY}":
        return _error(401, None)
    body = json.loads(await request.body())
    model = str(body.get("model"))
    return body, model, request.app.state.plans.get(model) or Plan()


async def _hang(request: Request, seconds: float) -> None:
    """Answer nothing for ``seconds``, or until the client has gone."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not await request.is_disconnected():
        await asyncio.sleep(0.05)


async def _fail(request: Request, failure: str, plan: Plan, stream: bool) -> Response | None:
    """The answer for a failure that is not in the body itself."""
    if failure.isdigit():
        return _error(int(failure), plan.retry_after)
    if failure == "hang" or (failure == "stall" and not stream):
        await _hang(request, plan.hang_s)
        return None
    if failure == "garbage":
        return Response(b"<html>502 Bad Gateway</html>", media_type="text/html")
    if not stream and failure == "cut":
        whole = json.dumps(_completion("cut")).encode()
        return Response(whole[: len(whole) // 2], media_type="application/json")
    if not stream and failure == "disconnect":
        return StreamingResponse(_half(json.dumps(_completion("cut")).encode()), media_type="application/json")
    return None


async def chat(request: Request) -> Response:
    checked = await _check(request)
    if isinstance(checked, Response):
        return checked
    body, model, plan = checked
    failure = _failing(request, model)
    if plan.latency_s:
        await asyncio.sleep(plan.latency_s)
    stream = bool(body.get("stream"))
    if failure is not None:
        answer = await _fail(request, failure, plan, stream)
        if answer is not None:
            return answer
    if stream:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(_stream(model, include_usage, failure, plan), media_type="text/event-stream")
    return JSONResponse(_completion(model))


async def embeddings(request: Request) -> Response:
    checked = await _check(request)
    if isinstance(checked, Response):
        return checked
    body, model, plan = checked
    failure = _failing(request, model)
    if failure is not None:
        answer = await _fail(request, failure, plan, False)
        if answer is not None:
            return answer
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))]
    return JSONResponse({"object": "list", "data": data, "model": model,
                         "usage": {"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS}})


def create_app(seed: int = 7) -> Starlette:
    app = Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ])
    app.state.plans = {}
    app.state.calls = Counter()
    app.state.failures = Counter()
    app.state.times = defaultdict(list)
    app.state.log = []
    app.state.rng = random.Random(seed)
    return app
