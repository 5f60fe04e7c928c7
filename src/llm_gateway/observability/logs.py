"""Logs on standard output, one JSON object a line (SPEC §7, §8).

``configure_logging`` makes every log record a JSON line. ``RequestLog``
writes the one line per request: built with orjson on the event loop,
gathered for a few milliseconds and handed to a writer thread, so a slow
reader of standard output never blocks a request (past a bound, lines are
dropped and counted instead).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
import time
from decimal import Decimal
from typing import IO, Any

import orjson

from llm_gateway.billing.pricing import format_usd

REQUEST_LOGGER = "llm_gateway.request"


class _Clock:
    """ISO-8601 UTC timestamps with milliseconds; the second's text is
    formatted once a second, not once a line."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def iso(self, t: float) -> str:
        second = int(t)
        if second != self._second:
            self._second, self._text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{int((t - second) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg"}`` plus ``exc`` with a traceback, and
    the record's structured ``fields`` if it has any
    (``log.warning(…, extra={"fields": {"deployment": …}})``); they never
    replace the four above."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": self._clock.iso(record.created), "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                data.setdefault(key, value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data).decode()


def configure_logging(level: str) -> None:
    """Every record as a JSON line on standard output, at ``level`` and above
    (worker processes forked later inherit it)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


class RequestLog:
    """The per-request JSON line (``llm_gateway.request`` at info level)."""

    def __init__(self, on_drop: Any, stream: IO[bytes] | None = None, flush_interval_s: float = 0.02,
                 max_pending_batches: int = 500) -> None:
        self._stream = stream
        self._on_drop = on_drop
        self._interval = flush_interval_s
        self._max_pending = max_pending_batches
        self._lines: list[bytes] = []
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock = _Clock()

    @property
    def enabled(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Write request lines only when ``llm_gateway.request`` logs at info."""
        if not logging.getLogger(REQUEST_LOGGER).isEnabledFor(logging.INFO):
            return
        if self._stream is None:
            self._stream = sys.stdout.buffer
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._write_forever, name="llm-gateway-request-log", daemon=True)
        self._thread.start()

    def write(
        self, *, request_id: str, endpoint: str, model: str, deployment: str | None, status: int,
        user_id: str | None, key_id: str | None, stream: bool, cache: str, input_tokens: int,
        cached_input_tokens: int, output_tokens: int, cost_usd: Decimal, latency_s: float, ttft_s: float | None,
        rate_limited: str | None,
    ) -> None:
        if self._loop is None:
            return
        line = orjson.dumps({
            "ts": self._clock.iso(time.time()), "level": "info", "logger": REQUEST_LOGGER, "msg": "request",
            "request_id": request_id, "endpoint": endpoint, "model": model, "deployment": deployment,
            "status": status, "user_id": user_id, "key_id": key_id, "stream": stream, "cache": cache,
            "input_tokens": input_tokens, "cached_input_tokens": cached_input_tokens, "output_tokens": output_tokens,
            "cost_usd": format_usd(cost_usd), "latency_ms": round(latency_s * 1000, 3),
            "ttft_ms": round(ttft_s * 1000, 3) if ttft_s is not None else None, "rate_limited": rate_limited,
        }, option=orjson.OPT_APPEND_NEWLINE)
        if not self._lines:
            self._loop.call_later(self._interval, self._hand_over)
        self._lines.append(line)

    def _hand_over(self) -> None:
        lines, self._lines = self._lines, []
        if not lines:
            return
        if self._queue.qsize() >= self._max_pending:
            self._on_drop(len(lines))
            return
        self._queue.put(b"".join(lines))

    def _write_forever(self) -> None:
        stream = self._stream
        assert stream is not None
        while True:
            data = self._queue.get()
            if data is None:
                return
            try:
                stream.write(data)
                stream.flush()
            except (OSError, ValueError):
                pass  # standard output closed: nothing left to tell

    async def aclose(self) -> None:
        """Write every line still held (shutdown)."""
        if self._thread is None:
            return
        self._hand_over()
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join, 5)
        self._thread = None
        self._loop = None
