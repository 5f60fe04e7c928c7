"""What the ``/v1`` endpoints of every dialect share: the request's
``Call``, the gateway's headers on its response, and the chat endpoint
itself, made from a dialect's decoder and encoders (``chat_endpoint``)."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from llm_gateway.api.auth import authenticate
from llm_gateway.api.responses import JSONBytes, read_json, request_id
from llm_gateway.api.sse import SSEResponse
from llm_gateway.auth.principal import Principal
from llm_gateway.billing.pricing import format_usd
from llm_gateway.db.errors import database_unavailable, is_unreachable
from llm_gateway.errors import GatewayError, InvalidRequest
from llm_gateway.observability.observer import bind_call
from llm_gateway.pipeline import Call
from llm_gateway.state import GatewayState
from llm_gateway.types import ChatRequest
from llm_gateway.wire.answer import Answer, Piece

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def gateway(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def call_headers(call: Call | None, rid: str) -> dict[str, str]:
    if call is None:
        return {"x-request-id": rid, "x-gateway-cache": "BYPASS"}
    headers = {"x-request-id": rid, "x-gateway-cache": call.cache}
    deployment = call.deployment
    if deployment is not None:
        headers["x-gateway-deployment"] = deployment
    if call.admission is not None:
        headers.update(call.admission.headers())
    return headers


def as_gateway_error(exc: Exception, gw: GatewayState, call: Call | None) -> GatewayError:
    """``exc`` if it is an error for the client. Anything else is a bug (or a
    client that went away): the request is recorded as a 500 — which settles
    what it took from the limits — and ``exc`` goes on up, to be reported
    (Sentry) and answered 500 in the dialect's shape by the outer layers
    (``api/guard.py``)."""
    if isinstance(exc, GatewayError):
        return exc
    if is_unreachable(exc):
        return database_unavailable()
    if call is not None:
        gw.pipeline.finish(call, 500)
    raise exc


def _asked_timeout(value: str) -> float:
    """``x-gateway-timeout``: the seconds a client gives the request, a positive
    number (the configured deadline caps it)."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise InvalidRequest(f"x-gateway-timeout must be a positive number of seconds, got {value[:40]!r}.",
                             code="invalid_value", param="x-gateway-timeout")
    return seconds


def new_call(request: Request, rid: str, model: str, principal: Principal) -> Call:
    asked = request.headers.get("x-gateway-timeout")
    call = Call(rid, model, principal, timeout_s=None if asked is None else _asked_timeout(asked))
    bind_call(call)  # unhandled errors reach Sentry with the request's model and user
    directives = request.headers.get("cache-control")
    if directives:
        directives = directives.lower()
        if "no-store" in directives:
            call.cache_mode = "off"
        elif "no-cache" in directives:
            call.cache_mode = "refresh"
    return call


def refused(gw: GatewayState, rid: str, endpoint: str, status: int, started: float) -> None:
    """Observe a request refused before it became a ``Call``."""
    if gw.observer is not None:
        gw.observer.refused(rid, endpoint, status, time.perf_counter() - started)


def cost_headers(call: Call, rid: str) -> dict[str, str]:
    headers = call_headers(call, rid)
    cost = call.cost
    if cost is not None:
        headers["x-gateway-cost-usd"] = format_usd(cost)
    return headers


@dataclass(frozen=True, slots=True)
class ChatDialect:
    """How one API dialect reads a chat request and writes its answers."""

    endpoint: str  # as recorded in logs, usage rows and metrics
    decode: Callable[[Any], ChatRequest]
    # (events, request, request id, upstream model) → the SSE bytes to send
    stream: Callable[[AsyncIterator[Piece], ChatRequest, str, str], AsyncIterator[bytes]]
    # (answer, request, request id) → the JSON body
    body: Callable[[Answer, ChatRequest, str], bytes]
    error_body: Callable[[GatewayError], bytes]
    # reads what the dialect takes from the request's headers into the decoded request
    headers: Callable[[ChatRequest, Request], None] | None = None


PrincipalOf = Callable[[Request, GatewayState], Awaitable[Principal]]


def chat_endpoint(
    dialect: ChatDialect, principal_of: PrincipalOf = authenticate
) -> Callable[[Request], Awaitable[Response]]:
    """The route handler for a dialect's chat endpoint: authenticate, decode,
    run the pipeline, and answer as JSON or as a stream. ``principal_of``
    names the caller (the dashboard's playground passes its session's)."""

    def error(exc: GatewayError, headers: dict[str, str]) -> Response:
        return JSONBytes(dialect.error_body(exc), status_code=exc.status_code,
                         headers=exc.response_headers() | headers)

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        gw = gateway(request)
        rid = request_id(request, gw.ids)
        call: Call | None = None
        try:
            principal = await principal_of(request, gw)
            req = dialect.decode(await read_json(request, gw.settings.max_request_bytes))
            if dialect.headers is not None:
                dialect.headers(req, request)
            call = new_call(request, rid, req.model, principal)
            call.endpoint = dialect.endpoint
            if req.stream:
                events = await gw.pipeline.chat_stream(req, call)
                model = call.route.deployment.model if call.route else req.model
                return SSEResponse(dialect.stream(events, req, rid, model),  # type: ignore[return-value]
                                   call_headers(call, rid) | _SSE_HEADERS)
            result = await gw.pipeline.chat(req, call)
        except Exception as exc:
            err = as_gateway_error(exc, gw, call)
            if call is not None:  # (a stream that had started records itself when it ends)
                gw.pipeline.finish(call, err.status_code)
            else:
                refused(gw, rid, dialect.endpoint, err.status_code, started)
            return error(err, call_headers(call, rid))
        body = dialect.body(result, req, rid)
        gw.pipeline.finish(call, 200)
        return JSONBytes(body, headers=cost_headers(call, rid))

    return endpoint
