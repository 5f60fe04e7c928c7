"""A fake Langfuse ingestion API on 127.0.0.1 (``POST /api/public/ingestion``).

It checks Basic auth like Langfuse (public key : secret key), answers 207
with a per-event ``successes`` list, and records every batch as received
(``app.state.langfuse``): the raw bodies, so tests can look for what must
never arrive, and the events by type. Clearing ``answering`` (a
``threading.Event``, set by default) makes it hold every request until the
test sets it again — a Langfuse that accepts connections but does not answer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PUBLIC_KEY = "pk-lf-test-public-0123456789"
SECRET_KEY = "sk-lf-test-secret-0123456789"


@dataclass
class LangfuseState:
    raw: list[bytes] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    waiting: int = 0  # requests held right now
    answering: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.answering.set()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e["body"] for e in self.events if e.get("type") == kind]


async def ingestion(request: Request) -> Response:
    state: LangfuseState = request.app.state.langfuse
    expected = "Basic " + base64.b64encode(f"{PUBLIC_KEY}:{SECRET_KEY}".encode()).decode()
    if request.headers.get("authorization") != expected:
        return JSONResponse({"message": "Invalid credentials"}, status_code=401)
    body = await request.body()
    if not state.answering.is_set():
        state.waiting += 1
        try:
            while not state.answering.is_set():
                await asyncio.sleep(0.01)
        finally:
            state.waiting -= 1
    state.raw.append(body)
    batch = json.loads(body)["batch"]
    state.events.extend(batch)
    return JSONResponse({"successes": [{"id": e["id"], "status": 201} for e in batch], "errors": []},
                        status_code=207)


def create_app() -> Starlette:
    app = Starlette(routes=[Route("/api/public/ingestion", ingestion, methods=["POST"])])
    app.state.langfuse = LangfuseState()
    return app
