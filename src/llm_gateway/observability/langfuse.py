"""Langfuse: a trace with one generation per request, posted in batches to
Langfuse's public ingestion API (``POST /api/public/ingestion``).

Why not the Langfuse SDK: it buffers in OpenTelemetry's span processor,
which drops silently when its queue is full (nothing to count) and brings
OpenTelemetry and a second HTTP client into the process. This exporter is
a bounded queue and one background task on the gateway's own event loop:

- ``record`` (on the request's path) only appends a small record, or drops
  it and counts ``gateway_langfuse_traces_dropped_total{reason="queue_full"}``;
- the task builds the events off the request's path and sends up to
  ``batch_size`` at a time, every ``flush_interval_s`` or sooner when a batch
  is full, one request at a time with a ``timeout_s`` bound;
- a failed batch is retried after a growing pause (Langfuse de-duplicates by
  event id) and dropped, counted, after three tries. A slow or absent
  Langfuse therefore costs a request nothing but the append.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

from llm_gateway import __version__
from llm_gateway.observability.bodies import BodyCapture
from llm_gateway.observability.metrics import Metrics
from llm_gateway.settings import LangfuseSettings
from llm_gateway.types import Usage

log = logging.getLogger("llm_gateway.langfuse")
_TRIES = 3
_MAX_PAUSE_S = 30.0
# With log_bodies, queued traces hold request and response bytes: bound those too.
MAX_QUEUED_BYTES = 64 << 20


@dataclass(slots=True)
class TraceRecord:
    """What one request did, as Langfuse will see it."""

    request_id: str
    endpoint: str
    model: str
    deployment: str | None
    status: int
    user_id: str | None
    key_id: str | None
    stream: bool
    cache: str
    usage: Usage | None
    cost: Decimal | None
    ended: float  # wall clock, seconds
    latency_s: float
    ttft_s: float | None
    bodies: BodyCapture | None = None  # with log_bodies: turned into input and output when sent

    @property
    def size(self) -> int:
        return self.bodies.size if self.bodies is not None else 0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_id() -> str:
    return secrets.token_hex(16)


def build_events(r: TraceRecord) -> list[dict[str, Any]]:
    """A ``trace-create`` and a ``generation-create`` event for one request."""
    started = r.ended - r.latency_s
    trace_id = _new_id()
    metadata: dict[str, Any] = {
        "request_id": r.request_id, "deployment": r.deployment, "status": r.status, "key_id": r.key_id,
        "stream": r.stream, "cache": r.cache, "latency_ms": round(r.latency_s * 1000, 3),
        "ttft_ms": round(r.ttft_s * 1000, 3) if r.ttft_s is not None else None,
    }
    trace: dict[str, Any] = {
        "id": trace_id, "timestamp": _iso(started), "name": r.endpoint, "metadata": metadata,
        "release": __version__, "tags": [r.endpoint, f"status:{r.status}"],
    }
    if r.user_id is not None:
        trace["userId"] = r.user_id
    generation: dict[str, Any] = {
        "id": _new_id(), "traceId": trace_id, "name": r.endpoint, "startTime": _iso(started),
        "endTime": _iso(r.ended), "model": r.model, "metadata": metadata,
        "level": "ERROR" if r.status >= 500 else "WARNING" if r.status >= 400 else "DEFAULT",
        "statusMessage": f"HTTP {r.status}",
    }
    if r.ttft_s is not None:
        generation["completionStartTime"] = _iso(started + r.ttft_s)
    if r.usage is not None:
        u = r.usage
        generation["usageDetails"] = {
            # Langfuse's "input" excludes cached tokens, which have a key of their own.
            "input": u.input_tokens - u.cached_input_tokens, "input_cached_tokens": u.cached_input_tokens,
            "output": u.output_tokens, "total": u.input_tokens + u.output_tokens,
        }
    if r.cost is not None:
        generation["costDetails"] = {"total": float(r.cost)}
    if r.bodies is not None:
        trace["input"] = generation["input"] = r.bodies.input(r.endpoint)
        trace["output"] = generation["output"] = r.bodies.output(r.endpoint)
    now = _iso(time.time())
    return [
        {"id": _new_id(), "type": "trace-create", "timestamp": now, "body": trace},
        {"id": _new_id(), "type": "generation-create", "timestamp": now, "body": generation},
    ]


class LangfuseExporter:
    """The bounded queue and the task that empties it."""

    def __init__(self, settings: LangfuseSettings, metrics: Metrics) -> None:
        self._settings = settings
        self._url = f"{settings.base_url}/api/public/ingestion"
        token = base64.b64encode(f"{settings.public_key}:{settings.secret_key}".encode()).decode()
        self._headers = {"authorization": f"Basic {token}", "content-type": "application/json"}
        self._queue: deque[TraceRecord] = deque()
        self._full = asyncio.Event()
        self._sent = metrics.langfuse_sent
        self._queue_full = metrics.langfuse_dropped.labels("queue_full")
        self._send_failed = metrics.langfuse_dropped.labels("send_failed")
        self._rejected = metrics.langfuse_dropped.labels("rejected")
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: list[list[dict[str, Any]]] = []  # a batch taken, not yet delivered
        self._queued_bytes = 0
        self._warned_at = 0.0

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s),
            connector=aiohttp.TCPConnector(limit=2),
        )
        self._task = asyncio.get_running_loop().create_task(self._run())

    def record(self, record: TraceRecord) -> None:
        """Queue one request's trace; drop it (counted) when the queue is full."""
        size = record.size
        if len(self._queue) >= self._settings.max_queue or self._queued_bytes + size > MAX_QUEUED_BYTES:
            self._queue_full.inc()
            return
        self._queued_bytes += size
        self._queue.append(record)
        if len(self._queue) >= self._settings.batch_size:
            self._full.set()

    async def _run(self) -> None:
        tries = 0
        while True:
            if not self._pending:
                try:
                    await asyncio.wait_for(self._full.wait(), self._settings.flush_interval_s)
                except TimeoutError:
                    pass
                self._full.clear()
                self._pending = self._take()
                tries = 0
                if not self._pending:
                    continue
            tries += 1
            if await self._send(self._pending):
                self._pending = []
                continue
            if tries >= _TRIES:
                self._send_failed.inc(len(self._pending))
                self._pending = []
            await asyncio.sleep(min(_MAX_PAUSE_S, 2.0 ** (tries - 1)))

    def _take(self) -> list[list[dict[str, Any]]]:
        """Up to a batch of queued requests, as their events."""
        taken = [self._queue.popleft() for _ in range(min(len(self._queue), self._settings.batch_size))]
        self._queued_bytes -= sum(r.size for r in taken)
        return [build_events(r) for r in taken]

    async def _send(self, traces: list[list[dict[str, Any]]]) -> bool:
        """True when Langfuse answered (what it rejected is counted); False to retry."""
        assert self._session is not None
        batch = [event for events in traces for event in events]
        body = orjson.dumps({"batch": batch, "metadata": {"sdk_name": "llm-gateway", "sdk_version": __version__}})
        try:
            async with self._session.post(self._url, data=body, headers=self._headers) as resp:
                status = resp.status
                answer = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._warn(f"Langfuse unreachable ({type(exc).__name__})")
            return False
        if status == 429 or status >= 500:
            self._warn(f"Langfuse answered HTTP {status}")
            return False
        if status >= 400:  # wrong keys or a malformed batch: trying again will not help
            self._warn(f"Langfuse refused a batch with HTTP {status}")
            self._rejected.inc(len(traces))
            return True
        refused: set[Any] = set()
        try:
            refused = {e.get("id") for e in orjson.loads(answer).get("errors") or [] if isinstance(e, dict)}
        except (orjson.JSONDecodeError, AttributeError):
            pass  # an answer without a per-event report: take the batch as accepted
        rejected = sum(1 for events in traces if any(e["id"] in refused for e in events)) if refused else 0
        if rejected:
            self._warn(f"Langfuse rejected {rejected} traces")
            self._rejected.inc(rejected)
        self._sent.inc(len(traces) - rejected)
        return True

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 60:
            self._warned_at = now
            log.warning("%s; traces wait in a bounded queue and are dropped when it is full", message)

    async def aclose(self, grace_s: float = 2.0) -> None:
        """Send what is queued, for ``grace_s`` at most, then stop; what is
        left is counted as not delivered."""
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

        async def drain() -> None:
            while self._pending or self._queue:
                if not self._pending:
                    self._pending = self._take()
                if not await self._send(self._pending):
                    return
                self._pending = []

        try:
            await asyncio.wait_for(drain(), grace_s)
        except TimeoutError:
            pass
        left = len(self._pending) + len(self._queue)
        if left:
            self._send_failed.inc(left)
        self._pending, self._queue, self._queued_bytes = [], deque(), 0
        if self._session is not None:
            await self._session.close()
