"""The observer: everything the gateway tells about a request, from one call
in ``Pipeline.finish`` — metrics, the JSON request log line, the Langfuse
trace and, for upstream failures, a Sentry event — plus an ASGI layer for
what ``finish`` cannot see: requests in flight and unhandled errors.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from decimal import Decimal
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llm_gateway.observability.bodies import BodyCapture
from llm_gateway.observability.langfuse import LangfuseExporter, TraceRecord
from llm_gateway.observability.logs import RequestLog
from llm_gateway.observability.metrics import UNKNOWN_MODEL, Metrics
from llm_gateway.observability.sentry import SentryReporter

if TYPE_CHECKING:
    from llm_gateway.pipeline import Call
    from llm_gateway.routing.router import Router
    from llm_gateway.settings import Settings

log = logging.getLogger("llm_gateway.observability")
# Statuses that mean the provider side failed the client (after retries and fallbacks).
UPSTREAM_FAILURES = frozenset((502, 503, 504))


class RequestScope:
    """What the ASGI layer and ``finish`` share about one ``/v1`` request."""

    __slots__ = ("bodies", "call", "finished", "record")

    def __init__(self, bodies: BodyCapture | None) -> None:
        self.bodies = bodies
        self.call: Call | None = None
        self.finished = False  # Pipeline.finish has recorded it
        self.record: TraceRecord | None = None


_current: ContextVar[RequestScope | None] = ContextVar("llm_gateway_request_scope", default=None)


def bind_call(call: Call) -> None:
    """Let an unhandled error later in this request be reported with its
    request id, model and user (a no-op when nothing needs it)."""
    scope = _current.get()
    if scope is not None:
        scope.call = call


class Observer:
    def __init__(self, settings: Settings, router: Router) -> None:
        obs = settings.observability
        self.metrics = Metrics(router.models.keys(), getattr(router, "circuit_states", None))
        if hasattr(router, "on_panic"):
            router.on_panic = self.metrics.panicked
        self.request_log = RequestLog(on_drop=self.metrics.log_lines_dropped.inc)
        self.sentry = SentryReporter(obs.sentry_dsn, obs.log_bodies, settings.environment) if obs.sentry_dsn else None
        self.langfuse = LangfuseExporter(obs.langfuse, self.metrics) if obs.langfuse.enabled else None
        self.capture_bodies = obs.log_bodies and self.langfuse is not None

    async def start(self) -> None:
        self.request_log.start()
        if self.sentry is not None:
            self.sentry.start()
        if self.langfuse is not None:
            self.langfuse.start()
        log.info("observability: request log %s, Sentry %s, Langfuse %s, metrics %s",
                 "on" if self.request_log.enabled else "off (log level above info)",
                 "on" if self.sentry else "off", "on" if self.langfuse else "off",
                 "multiprocess" if self.metrics.multiprocess_path else "single process")

    async def aclose(self) -> None:
        """After the pipeline has drained: deliver what is held."""
        if self.langfuse is not None:
            await self.langfuse.aclose()
        if self.sentry is not None:
            await self.sentry.aclose()
        await self.request_log.aclose()

    # ------------------------------------------------------------ requests

    def observe(self, call: Call, status: int, now: float, cost: Decimal) -> None:
        """One request that reached the pipeline has ended (``Pipeline.finish``).
        It runs where requests end (``finally`` blocks included): a fault here
        is logged, never raised into the request."""
        try:
            self._observe(call, status, now, cost)
        except Exception:
            log.exception("observing request %s failed", call.request_id)

    def _observe(self, call: Call, status: int, now: float, cost: Decimal) -> None:
        scope = _current.get()
        if scope is not None:
            scope.finished = True
        latency = now - call.started
        ttft = call.first_byte_at - call.started if call.first_byte_at is not None else None
        deployment = call.deployment
        limited = call.limited_scope if status == 429 else None
        upstream = None
        if call.route is not None and call.cache != "HIT":
            # Until the provider-call step stamps its start, the request's
            # start stands in for it (admission and reservation included).
            upstream = now - (call.upstream_started or call.started)
        self.metrics.record(self.metrics.model_label(call.model), deployment, status, latency, ttft, call.usage, cost,
                            call.cache, limited, upstream)
        principal = call.principal
        usage = call.usage
        model = call.model[:200]
        if self.request_log.enabled:
            self.request_log.write(
                request_id=call.request_id, endpoint=call.endpoint, model=model, deployment=deployment,
                status=status, user_id=principal.user_id, key_id=principal.key_id, stream=call.stream,
                cache=call.cache, input_tokens=usage.input_tokens if usage else 0,
                cached_input_tokens=usage.cached_input_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0, cost_usd=cost, latency_s=latency, ttft_s=ttft,
                rate_limited=limited,
            )
        if self.langfuse is not None:
            record = TraceRecord(
                call.request_id, call.endpoint, model, deployment, status, principal.user_id, principal.key_id,
                call.stream, call.cache, usage, cost, time.time(), latency, ttft,
            )
            if scope is not None and scope.bodies is not None:
                scope.record = record  # sent when the response is complete, with the contents
            else:
                self.langfuse.record(record)
        if self.sentry is not None and status in UPSTREAM_FAILURES:
            self.sentry.upstream_failure(status, _tags(call, status), principal.user_id)

    def refused(self, request_id: str, endpoint: str, status: int, latency: float) -> None:
        """A ``/v1`` request that ended before it named a model or a caller
        (a bad credential, a body that is not valid): counted under the model
        ``unknown`` and logged, like every other request."""
        self.metrics.record(UNKNOWN_MODEL, None, status, latency, None, None, None, "BYPASS", None, None)
        if self.request_log.enabled:
            self.request_log.write(
                request_id=request_id, endpoint=endpoint, model=UNKNOWN_MODEL, deployment=None, status=status,
                user_id=None, key_id=None, stream=False, cache="BYPASS", input_tokens=0,
                cached_input_tokens=0, output_tokens=0, cost_usd=Decimal(0), latency_s=latency, ttft_s=None,
                rate_limited=None,
            )

    def unhandled(self, exc: Exception, asgi_scope: Scope, scope: RequestScope, started: float) -> None:
        """An error nothing handled: the client gets a 500. Recorded here
        unless ``finish`` already did (an error after a stream's end)."""
        call = scope.call
        path = str(asgi_scope.get("path", ""))[:200]
        if call is not None:
            if not scope.finished:
                self.observe(call, 500, time.perf_counter(), call.charged or Decimal(0))
            tags = _tags(call, 500)
            user_id = call.principal.user_id
        else:
            rid = (_header(asgi_scope, b"x-request-id") or "")[:128]
            if not scope.finished:
                self.refused(rid, path, 500, time.perf_counter() - started)
            tags = {"status": "500"}
            if rid:
                tags["request_id"] = rid
            user_id = None
        tags["path"] = path
        if self.sentry is not None:
            self.sentry.exception(exc, tags, user_id)

    def finish_scope(self, scope: RequestScope) -> None:
        """The response is complete: queue the trace held back for its
        contents (parsed later, by the exporter)."""
        record, scope.record = scope.record, None
        if record is None or self.langfuse is None:
            return
        record.bodies = scope.bodies
        self.langfuse.record(record)


def _tags(call: Call, status: int) -> dict[str, str]:
    return {"request_id": call.request_id, "model": call.model[:200], "deployment": call.deployment or "",
            "status": str(status), "endpoint": call.endpoint, "key_id": call.principal.key_id or ""}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class ObservedRequests:
    """ASGI layer around the app: ``gateway_in_flight_requests`` for ``/v1``
    requests and unhandled errors reported before the 500 is rendered."""

    def __init__(self, app: ASGIApp, observer: Observer) -> None:
        self.app = app
        self.observer = observer
        self.in_flight = observer.metrics.in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        observer = self.observer
        request = RequestScope(BodyCapture() if observer.capture_bodies else None)
        token = _current.set(request)
        if request.bodies is not None:
            receive, send = _capturing(request.bodies, receive, send)
        started = time.perf_counter()
        self.in_flight.inc()
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            observer.unhandled(exc, scope, request, started)
            raise
        finally:
            self.in_flight.dec()
            _current.reset(token)
            if request.record is not None:
                observer.finish_scope(request)


def _capturing(bodies: BodyCapture, receive: Receive, send: Send) -> tuple[Receive, Send]:
    async def receive_and_keep() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            bodies.add_request(message.get("body", b""))
        return message

    async def send_and_keep(message: Message) -> None:
        if message["type"] == "http.response.start":
            for key, value in message.get("headers") or ():
                if key.lower() == b"content-type" and bytes(value).startswith(b"text/event-stream"):
                    bodies.event_stream = True
        elif message["type"] == "http.response.body":
            bodies.add_response(message.get("body", b""))
        await send(message)

    return receive_and_keep, send_and_keep
