"""A fake Sentry on 127.0.0.1: takes the SDK's envelopes
(``POST /api/<project>/envelope/``, gzip or brotli compressed) and records
the events in them (``app.state.sentry``), with the raw decompressed bytes
so tests can look for what must never arrive.

``dsn(url)`` is the DSN that points the SDK here.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PUBLIC_KEY = "0123456789abcdef0123456789abcdef"


def dsn(url: str, project: int = 42) -> str:
    scheme, _, host = url.partition("://")
    return f"{scheme}://{PUBLIC_KEY}@{host}/{project}"


@dataclass
class SentryState:
    raw: list[bytes] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def _decode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "br":
        import brotli  # type: ignore[import-not-found]

        return bytes(brotli.decompress(body))
    return body


async def envelope(request: Request) -> Response:
    state: SentryState = request.app.state.sentry
    auth = request.headers.get("x-sentry-auth", "")
    if f"sentry_key={PUBLIC_KEY}" not in auth:
        return JSONResponse({"detail": "bad key"}, status_code=401)
    raw = _decode(await request.body(), request.headers.get("content-encoding", ""))
    state.raw.append(raw)
    # An envelope: a header line, then (item header line, payload line) pairs.
    lines = raw.split(b"\n")
    i = 1
    while i + 1 < len(lines):
        header = json.loads(lines[i])
        if header.get("type") in ("event", "transaction"):
            state.events.append(json.loads(lines[i + 1]))
        i += 2
    return JSONResponse({"id": "0"})


def create_app() -> Starlette:
    app = Starlette(routes=[Route("/api/{project}/envelope/", envelope, methods=["POST"])])
    app.state.sentry = SentryState()
    return app
