"""A fake OpenAI upstream whose streams take as long as a test asks, so that
a test can act (send SIGTERM, time chunks) while a stream is in the middle.

``POST /<tag>/v1/chat/completions`` answers like OpenAI. The last user
message ``pace:<chunks>:<ms>`` makes a stream of that many content chunks,
``ms`` apart, then the usage chunk (when asked for) and ``[DONE]``. ``tag``
names which gateway instance called (each instance's config points at its
own tag), so a test can tell which one serves a stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

API_KEY = "sk-test-paced"


@dataclass
class Seen:
    """One request as the upstream saw it."""

    tag: str
    request_id: str | None
    started: float
    finished: float | None = None
    chunks_sent: int = 0


@dataclass
class PacedState:
    seen: list[Seen] = field(default_factory=list)

    def by_request_id(self, request_id: str) -> Seen:
        return next(s for s in self.seen if s.request_id == request_id)


def _pace(body: dict[str, Any]) -> tuple[int, float]:
    text = str(body["messages"][-1].get("content") or "")
    if text.startswith("pace:"):
        _, chunks, ms = text.split(":")
        return int(chunks), int(ms) / 1000
    return 3, 0.0


def usage_for(chunks: int) -> dict[str, int]:
    """What a paced answer of ``chunks`` chunks reports (one token a chunk)."""
    return {"prompt_tokens": 7, "completion_tokens": chunks, "total_tokens": 7 + chunks}


def _chunk(content: str | None, finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    data: dict[str, Any] = {"id": "chatcmpl-paced", "object": "chat.completion.chunk", "created": 0,
                            "model": "paced-1"}
    data["choices"] = [] if usage else [
        {"index": 0, "delta": {"content": content} if content is not None else {}, "finish_reason": finish}]
    if usage:
        data["usage"] = usage
    return b"data: " + json.dumps(data).encode() + b"\n\n"


async def _stream(seen: Seen, chunks: int, gap_s: float, include_usage: bool) -> AsyncIterator[bytes]:
    for i in range(chunks):
        yield _chunk(f"w{i} ")
        seen.chunks_sent += 1
        await asyncio.sleep(gap_s)
    yield _chunk(None, "stop")
    if include_usage:
        yield _chunk(None, usage=usage_for(chunks))
    yield b"data: [DONE]\n\n"
    seen.finished = time.monotonic()


async def chat(request: Request) -> Response:
    if request.headers.get("authorization") != f"Bearer {API_KEY}":
        return JSONResponse({"error": {"message": "bad key", "type": "invalid_request_error", "param": None,
                                       "code": "invalid_api_key"}}, status_code=401)
    body = json.loads(await request.body())
    state: PacedState = request.app.state.paced
    seen = Seen(request.path_params["tag"], request.headers.get("x-request-id"), time.monotonic())
    state.seen.append(seen)
    chunks, gap_s = _pace(body)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(_stream(seen, chunks, gap_s, include_usage), media_type="text/event-stream")
    seen.finished = time.monotonic()
    return JSONResponse({
        "id": "chatcmpl-paced", "object": "chat.completion", "created": 0, "model": "paced-1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(f"w{i}" for i in range(chunks))},
                     "finish_reason": "stop"}],
        "usage": usage_for(chunks),
    })


def create_app() -> Starlette:
    app = Starlette(routes=[Route("/{tag}/v1/chat/completions", chat, methods=["POST"])])
    app.state.paced = PacedState()
    return app
