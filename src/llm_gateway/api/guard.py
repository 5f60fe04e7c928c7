"""The outermost layer of every HTTP request, whatever its route.

- **One body limit** (``max_request_bytes``) before authentication and
  before any parsing: a declared ``Content-Length`` over it is answered 413
  without reading a byte, and a body that grows past it (chunked, or longer
  than declared) stops being read at the limit.
- **Every response carries ``x-request-id``**, also 404s for unknown paths,
  405s and 500s, which no route handler wrote.
- **Nothing unhandled leaves as a traceback:** an exception that escapes the
  app becomes a 500 in the error shape of the route's dialect (Anthropic's
  on ``/v1/messages``), logged once with its traceback; a client that went
  away while its request was read or answered is an ``info`` line, not an
  error.
"""

from __future__ import annotations

import logging
from typing import Protocol

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llm_gateway.db.errors import database_unavailable, is_unreachable
from llm_gateway.errors import GatewayError, RequestTooLarge
from llm_gateway.ids import RequestIds
from llm_gateway.wire.anthropic.encode import error_body as anthropic_error_body

log = logging.getLogger("llm_gateway.http")

_REQUEST_ID = b"x-request-id"


class HasIds(Protocol):
    ids: RequestIds


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once the body passes the limit. An
    ``HTTPException``, so that FastAPI's body parsing lets it through (it
    turns other errors into a 400) and the app's handler renders it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body exceeds the limit of {limit} bytes.")


def is_anthropic_path(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def error_bytes(path: str, err: GatewayError) -> bytes:
    """``err`` in the error shape of the dialect that ``path`` speaks."""
    return anthropic_error_body(err) if is_anthropic_path(path) else err.to_bytes()


def client_request_id(scope: Scope) -> str | None:
    """The client's ``x-request-id`` when it sent a sane one."""
    for key, value in scope["headers"]:
        if key == _REQUEST_ID:
            rid = value.decode("latin-1")
            return rid if rid and len(rid) <= 128 and rid.isprintable() else None
    return None


def _declared_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class RequestGuard:
    """See the module's docstring. Costs a request two thin wrappers (receive
    and send) and a scan of the response's header names."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, holder: HasIds) -> None:
        self.app = app
        self.limit = max_body_bytes
        self.holder = holder  # the state, whose ids each worker process renews at start-up

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            # Refused unread; the connection is closed so the unread body is never parsed as a request.
            await self._answer(scope, send, RequestTooLarge(f"The request body exceeds the limit of {limit} bytes."),
                               close=True)
            return
        size = 0
        started = False
        rid: str | None = None

        async def receive_within_limit() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise BodyTooLarge(limit)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal started, rid
            if message["type"] == "http.response.start":
                started = True
                headers = message.setdefault("headers", [])
                if not any(key == _REQUEST_ID for key, _ in headers):
                    rid = client_request_id(scope) or self.holder.ids.new()
                    message["headers"] = [*headers, (_REQUEST_ID, rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive_within_limit, send_with_id)
        except ClientDisconnect:
            log.info("client disconnected before its request was read: %s %s", scope["method"], scope["path"])
        except BodyTooLarge as exc:
            if not started:
                await self._answer(scope, send, RequestTooLarge(str(exc.detail)), close=True)
        except Exception as exc:
            if is_unreachable(exc):  # an outage, not a bug: 503, the connection kept
                log.warning("database unreachable (%s): %s %s answered 503", type(exc).__name__, scope["method"],
                            scope["path"])
                if not started:
                    await self._answer(scope, send, database_unavailable())
            elif isinstance(exc, OSError):  # the socket went away while answering
                log.info("client disconnected while being answered (%s): %s %s", type(exc).__name__,
                         scope["method"], scope["path"])
            else:
                log.exception("unhandled error in %s %s", scope["method"], scope["path"])
                if not started:
                    await self._answer(scope, send, GatewayError(
                        "The gateway failed to handle this request.", code="internal_error"))

    async def _answer(self, scope: Scope, send: Send, err: GatewayError, close: bool = False) -> None:
        body = error_bytes(scope["path"], err)
        rid = client_request_id(scope) or self.holder.ids.new()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (_REQUEST_ID, rid.encode("latin-1"))]
        headers += [(k.encode(), v.encode()) for k, v in err.response_headers().items()]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": err.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})
