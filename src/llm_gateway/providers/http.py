"""Shared upstream HTTP plumbing: the pooled aiohttp session, SSE parsing,
and the mapping of transport failures into the gateway's error tree."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from llm_gateway.errors import GatewayError, UpstreamError, UpstreamTimeout, upstream_status_error
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


def timeouts(settings: ProviderSettings, *, stream: bool) -> aiohttp.ClientTimeout:
    """A non-streaming attempt is bounded by ``timeout_s`` in total; a stream by
    ``timeout_s`` to its first byte and between chunks."""
    if stream:
        return aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout_s, sock_read=settings.timeout_s
        )
    return aiohttp.ClientTimeout(total=settings.timeout_s, sock_connect=settings.connect_timeout_s)


@contextlib.contextmanager
def transport_errors(provider: str) -> Iterator[None]:
    """Map aiohttp/asyncio failures to the error tree; never leak an address."""
    try:
        yield
    except GatewayError:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout(f"The {provider} provider timed out.") from None
    except aiohttp.ClientConnectorError:
        raise UpstreamError(f"Could not connect to the {provider} provider.") from None
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        raise UpstreamError(f"The {provider} provider closed the connection unexpectedly.") from None
    except aiohttp.ClientError:
        raise UpstreamError(f"The request to the {provider} provider failed.") from None


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
        raise UpstreamError(f"The {provider} provider answered with invalid JSON.") from None


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
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Gemini sometimes wraps the error in a list
    if isinstance(data, dict):
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
        self._settings = settings
        self._headers = headers
        self._map_error = map_error
        self._timeout = timeouts(settings, stream=False)
        self._stream_timeout = timeouts(settings, stream=True)
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

    def _post(self, url: str, body: Any, request_id: str, stream: bool) -> Any:
        return self.session.post(
            url, data=orjson.dumps(body), headers=self._headers | {"x-request-id": request_id},
            timeout=self._stream_timeout if stream else self._timeout,
        )

    async def call(self, url: str, body: Any, request_id: str) -> bytes:
        """POST JSON; the answer's bytes, or the mapped error."""
        with transport_errors(self.name):
            async with self._post(url, body, request_id, stream=False) as resp:
                raw: bytes = await resp.read()
                if resp.status >= 400:
                    raise self._map_error(resp.status, raw, resp.headers, self.name)
        return raw

    async def open_stream(self, url: str, body: Any, request_id: str) -> aiohttp.ClientResponse:
        """POST JSON and wait for the answer's headers; an error status is
        read and mapped before anything reaches the client."""
        with transport_errors(self.name):
            resp: aiohttp.ClientResponse = await self._post(url, body, request_id, stream=True).__aenter__()
            if resp.status >= 400:
                try:
                    raw = await resp.read()
                finally:
                    resp.release()
                raise self._map_error(resp.status, raw, resp.headers, self.name)
        return resp


def finish(resp: aiohttp.ClientResponse, clean: bool) -> None:
    """Return a finished stream's connection to the pool; drop an unfinished
    one, so the upstream stops generating at once."""
    if clean:
        resp.release()
    else:
        resp.close()
