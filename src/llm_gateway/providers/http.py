"""Shared upstream HTTP plumbing: the pooled aiohttp session, SSE parsing,
the time limits of one attempt, and the mapping of transport failures into
the gateway's error tree, each with its cause in words (``causes``) for the
router's log line of the attempt."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from llm_gateway.errors import GatewayError, UpstreamError, UpstreamTimeout, upstream_status_error
from llm_gateway.providers import causes
from llm_gateway.providers.base import REQUEST_DEADLINE, Timeouts
from llm_gateway.settings import ProviderSettings


def new_session(settings: ProviderSettings) -> aiohttp.ClientSession:
    """One pooled client per provider, opened at start-up."""
    connector = aiohttp.TCPConnector(
        limit=settings.max_connections,
        limit_per_host=settings.max_connections,
        ttl_dns_cache=300,
        keepalive_timeout=60,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        json_serialize=lambda o: orjson.dumps(o).decode(),
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
        headers={"user-agent": "llm-gateway"},
    )


@dataclass(slots=True, frozen=True)
class Limits:
    """One attempt's time limits (a provider's, with a model's overrides), and
    the aiohttp timeout of a non-streaming call built from them once.

    A non-streaming call is bounded by ``total``, ``connect`` and, through
    aiohttp's read timeout, a configured first byte. A stream's ``connect`` is
    aiohttp's; its first byte (``first_byte``: ``STREAM_FIRST_BYTE_S`` when
    none is configured), silences and total are kept by a ``_Watchdog``. The
    request's deadline caps them all (the router's, and the watchdog's).
    """

    total: float
    connect: float
    first_byte: float | None
    idle: float | None
    call: aiohttp.ClientTimeout
    stream: aiohttp.ClientTimeout


# A stream's time to first byte when none is configured: a hung provider
# is given up on, and another deployment tried, well before the stream's
# deadline. (A plain answer's first byte comes only once it is complete:
# its deadline alone bounds it.)
STREAM_FIRST_BYTE_S = 120.0


def limits(settings: ProviderSettings, override: Timeouts | None = None) -> Limits:
    o = override or Timeouts()
    total = o.total or settings.timeout_s
    connect = o.connect or settings.connect_timeout_s
    first_byte = o.first_byte or settings.first_byte_timeout_s
    idle = o.idle or settings.idle_timeout_s
    return Limits(
        total, connect, first_byte or STREAM_FIRST_BYTE_S, idle,
        call=aiohttp.ClientTimeout(total=total, sock_connect=connect, sock_read=first_byte),
        stream=aiohttp.ClientTimeout(total=None, sock_connect=connect),
    )


_WATCHDOG = "_gateway_watchdog"


class _Watchdog:
    """Bounds a stream's time to first byte, its silences and its total with
    one timer per stream, re-armed only when it fires: nothing is done per
    chunk (progress is read from the response's byte count). While an idle
    limit is set the timer looks every quarter of it, so a silence is caught
    between 1 and 1.5 times the limit. A limit passed fails the pending read
    with ``UpstreamTimeout``.

    The request's ``deadline`` ends a stream that has begun to flow. Before
    its first byte the router keeps the deadline itself, as for any attempt
    (a deadline passed there is no verdict on the provider); here it is only
    looked at, so the timer wakes in time for a stream that began since."""

    __slots__ = ("_content", "_deadline", "_end_by", "_first_by", "_handle", "_idle", "_last", "_loop",
                 "_provider", "_seen")

    def __init__(
        self, resp: aiohttp.ClientResponse, lim: Limits, started: float, provider: str, deadline: float | None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._content = resp.content
        self._provider = provider
        self._end_by = started + lim.total
        self._deadline = deadline if deadline is not None and deadline < self._end_by else math.inf
        self._first_by = started + lim.first_byte if lim.first_byte is not None else self._end_by
        self._idle = lim.idle
        self._seen = self._content.total_bytes
        self._last = now = self._loop.time()
        self._handle: asyncio.TimerHandle | None = None
        self._arm(now)

    def _arm(self, now: float) -> None:
        if self._seen:
            deadline = min(self._end_by, self._deadline)
        else:
            deadline = min(self._first_by, self._end_by)
            if self._deadline > now:  # (past it, the router is ending the attempt: no need to look again)
                deadline = min(deadline, self._deadline)
        if self._idle is not None:
            deadline = min(deadline, now + self._idle / 4)
        self._handle = self._loop.call_at(deadline, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        seen = self._content.total_bytes
        if seen != self._seen:
            self._seen, self._last = seen, now
        if now >= self._end_by:
            self._expire("took longer than the attempt's total time limit", "total")
        elif self._seen and now >= self._deadline:
            self._expire("outlasted the request's deadline", "request deadline")
        elif not self._seen and now >= self._first_by:
            self._expire("sent nothing within the time-to-first-byte limit", "first byte")
        elif self._seen and self._idle is not None and now - self._last >= self._idle:
            self._expire(f"went silent for more than {self._idle:g} s", "idle between chunks")
        else:
            self._arm(now)

    def _expire(self, what: str, phase: str) -> None:
        self._handle = None
        self._content.set_exception(UpstreamTimeout(
            f"The {self._provider} provider timed out: the stream {what}.", cause=causes.timed_out(phase)))

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


@contextlib.contextmanager
def transport_errors(provider: str, timeout: str = "total") -> Iterator[None]:
    """Map aiohttp/asyncio failures to the error tree, with their cause; the
    message never names an address. ``timeout``: which limit a plain
    ``TimeoutError`` inside means (aiohttp's own say which they are)."""
    try:
        yield
    except GatewayError:
        raise
    except aiohttp.ConnectionTimeoutError:
        raise UpstreamTimeout(f"The {provider} provider timed out.", cause=causes.timed_out("connect")) from None
    except aiohttp.ServerTimeoutError:  # a read: only the first byte of a plain call has such a limit
        raise UpstreamTimeout(f"The {provider} provider timed out.", cause=causes.timed_out("first byte")) from None
    except TimeoutError:
        raise UpstreamTimeout(f"The {provider} provider timed out.", cause=causes.timed_out(timeout)) from None
    except aiohttp.ClientConnectorError as exc:
        cause = causes.connect_failure(exc)
        raise UpstreamError(f"Could not connect to the {provider} provider.", cause=cause) from None
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        cause = causes.broken_connection(exc)
        raise UpstreamError(f"The {provider} provider closed the connection unexpectedly.", cause=cause) from None
    except aiohttp.ClientError as exc:
        cause = causes.broken_connection(exc)
        raise UpstreamError(f"The request to the {provider} provider failed.", cause=cause) from None


def parse_retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def load_json(body: bytes, provider: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError(f"The {provider} provider answered with invalid JSON.",
                            cause=causes.INVALID_RESPONSE) from None


def unexpected_body(provider: str) -> UpstreamError:
    """An answer that is JSON, but not the shape the provider's API promises."""
    return UpstreamError(f"The {provider} provider answered with an unexpected body.", cause=causes.INVALID_RESPONSE)


def _status_error(map_error: ErrorMapper, status: int, body: bytes, headers: Any, provider: str) -> GatewayError:
    """A provider's error answer, mapped, with its status and message as the cause."""
    err = map_error(status, body, headers, provider)
    err.cause = causes.http_status(status, body)
    return err


def error_from_response(
    status: int, body: bytes, headers: Any, provider: str
) -> GatewayError:
    """Map an upstream error answer. Understands the error bodies of OpenAI
    (``{"error": {"message", "type", "param", "code"}}``), Anthropic
    (``{"type": "error", "error": {"type", "message"}}``) and Gemini
    (``{"error": {"code", "message", "status"}}``)."""
    message: str | None = None
    code: str | None = None
    param: str | None = None
    data = causes.error_document(body)
    if data is not None:
        err = data.get("error")
        if isinstance(err, dict):
            if isinstance(err.get("message"), str):
                message = err["message"]
            raw_code = err.get("code")
            if isinstance(raw_code, str):
                code = raw_code
            elif isinstance(err.get("status"), str):
                code = err["status"].lower()
            elif isinstance(err.get("type"), str) and err.get("type") != "error":
                code = err["type"]
            if isinstance(err.get("param"), str):
                param = err["param"]
    return upstream_status_error(
        status, message, code=code, param=param, retry_after=parse_retry_after(headers), provider=provider
    )


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: bytes


async def iter_sse(content: aiohttp.StreamReader) -> AsyncIterator[SSEEvent]:
    """Parse a ``text/event-stream`` body as it arrives (LF or CRLF lines).

    Multi-line ``data:`` fields are joined with ``\\n``; comments and other
    fields are ignored.
    """
    event: str | None = None
    data: list[bytes] = []
    async for raw in content:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield SSEEvent(event, b"\n".join(data))
            event, data = None, []
            continue
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode("utf-8", "replace")
    if data:
        yield SSEEvent(event, b"\n".join(data))


ErrorMapper = Callable[[int, bytes, Any, str], GatewayError]


class Upstream:
    """One provider's pooled HTTP client: its fixed headers, its timeouts and
    its error mapping, shared by every adapter so that each adapter is only
    URLs and translation."""

    def __init__(
        self, settings: ProviderSettings, headers: dict[str, str], map_error: ErrorMapper = error_from_response
    ) -> None:
        self.name = settings.name
        self.address = causes.address(settings.base_url)  # for the log: no path, no query, no key
        self._settings = settings
        self._headers = headers
        self._map_error = map_error
        self._limits = limits(settings)
        self._overridden: dict[Timeouts, Limits] = {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "provider not started"
        return self._session

    async def start(self) -> None:
        self._session = new_session(self._settings)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _limits_for(self, override: Timeouts | None) -> Limits:
        """The provider's limits, or a model's overrides of them (built once)."""
        if override is None:
            return self._limits
        got = self._overridden.get(override)
        if got is None:
            got = self._overridden[override] = limits(self._settings, override)
        return got

    def _post(self, url: str, body: Any, request_id: str, timeout: aiohttp.ClientTimeout,
              extra: dict[str, str] | None = None) -> Any:
        headers = self._headers | {"x-request-id": request_id}
        if extra:
            headers |= extra
        return self.session.post(url, data=orjson.dumps(body), headers=headers, timeout=timeout)

    async def call(self, url: str, body: Any, request_id: str, timeouts: Timeouts | None = None,
                   headers: dict[str, str] | None = None) -> bytes:
        """POST JSON (with ``headers`` over the provider's own); the answer's
        bytes, or the mapped error."""
        with transport_errors(self.name):
            async with self._post(url, body, request_id, self._limits_for(timeouts).call, headers) as resp:
                raw: bytes = await resp.read()
                if resp.status >= 400:
                    raise _status_error(self._map_error, resp.status, raw, resp.headers, self.name)
        return raw

    async def open_stream(
        self, url: str, body: Any, request_id: str, timeouts: Timeouts | None = None,
        headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """POST JSON and wait for the answer's headers; an error status is
        read and mapped before anything reaches the client. From then on a
        watchdog keeps the stream's time limits until ``finish``."""
        lim = self._limits_for(timeouts)
        started = asyncio.get_running_loop().time()
        first_by = min(lim.first_byte or lim.total, lim.total)
        phase = "first byte" if lim.first_byte is not None and lim.first_byte < lim.total else "total"
        with transport_errors(self.name, phase):
            async with asyncio.timeout(first_by):
                resp: aiohttp.ClientResponse = await self._post(
                    url, body, request_id, lim.stream, headers).__aenter__()
                if resp.status >= 400:
                    try:
                        raw = await resp.read()
                    finally:
                        resp.release()
                    raise _status_error(self._map_error, resp.status, raw, resp.headers, self.name)
        setattr(resp, _WATCHDOG, _Watchdog(resp, lim, started, self.name, REQUEST_DEADLINE.get()))
        return resp


def finish(resp: aiohttp.ClientResponse, clean: bool) -> None:
    """Return a finished stream's connection to the pool; drop an unfinished
    one, so the upstream stops generating at once."""
    watchdog: _Watchdog | None = getattr(resp, _WATCHDOG, None)
    if watchdog is not None:
        watchdog.stop()
    if clean:
        resp.release()
    else:
        resp.close()
