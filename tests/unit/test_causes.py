"""The cause of a failed upstream attempt in words (``providers/causes.py``),
as the transport boundary finds it: the address the log may name (never a
key), a provider's status and message, and why a connection failed."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest

from llm_gateway.errors import GatewayError, UpstreamError
from llm_gateway.providers import causes
from llm_gateway.providers.http import Upstream
from llm_gateway.settings import ProviderSettings


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:9/v1", "http://127.0.0.1:9"),
    ("https://api.openai.com/v1", "https://api.openai.com:443"),
    ("http://proxy.internal/v1/", "http://proxy.internal:80"),
    ("https://user:sk-secret@example.com:8443/v1?key=AIza-secret", "https://example.com:8443"),
    ("http://[::1]:8080/v1", "http://[::1]:8080"),
])
def test_the_address_is_scheme_host_and_port_only(url: str, expected: str) -> None:
    assert causes.address(url) == expected


def test_a_status_names_the_providers_message_cut_short() -> None:
    openai = orjson.dumps({"error": {"message": "The server is overloaded.", "type": "server_error"}})
    anthropic = orjson.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    gemini = orjson.dumps([{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}])
    assert causes.http_status(503, openai) == "HTTP 503: The server is overloaded."
    assert causes.http_status(529, anthropic) == "HTTP 529: Overloaded"
    assert causes.http_status(503, gemini) == "HTTP 503: The model is overloaded."
    assert causes.http_status(502, b"<html>\n  Bad   Gateway\n</html>") == "HTTP 502: <html> Bad Gateway </html>"
    assert causes.http_status(500, b"") == "HTTP 500"
    long = causes.http_status(500, orjson.dumps({"error": {"message": "x" * 1000}}))
    assert long == "HTTP 500: " + "x" * (causes.MAX_MESSAGE - 1) + "…"


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_never_quoted(status: int) -> None:
    body = orjson.dumps({"error": {"message": "Incorrect API key provided: sk-abc123secret."}})
    cause = causes.http_status(status, body)
    assert cause.startswith(f"HTTP {status}: ") and "sk-abc" not in cause


KEY: Any = SimpleNamespace(host="h", port=1, ssl=False)  # only its text is read


@pytest.mark.parametrize(("exc", "expected"), [
    (aiohttp.ClientConnectorError(KEY, OSError(errno.ECONNREFUSED, "Connect call failed")), "connection refused"),
    # every address of "localhost" refused: one error listing them, with no errno of its own
    (aiohttp.ClientConnectorError(KEY, OSError(
        "Multiple exceptions: [Errno 111] Connect call failed ('::1', 9), [Errno 111] Connect call failed "
        "('127.0.0.1', 9)")), "connection refused"),
    (aiohttp.ClientConnectorError(KEY, socket.gaierror(-2, "Name or service not known")), "DNS lookup failed"),
    (aiohttp.ClientConnectorError(KEY, OSError(errno.EHOSTUNREACH, "No route to host")), "host unreachable"),
    (aiohttp.ClientConnectorError(KEY, ssl.SSLError(1, "wrong version number")), "TLS handshake failed"),
    (aiohttp.ClientConnectorCertificateError(KEY, ssl.SSLCertVerificationError("unable to get local issuer")),
     "TLS handshake failed"),
    (aiohttp.ClientConnectorError(KEY, OSError(errno.EACCES, "Permission denied")),
     "connection failed (Permission denied)"),
])
def test_why_a_connection_failed(exc: aiohttp.ClientConnectorError, expected: str) -> None:
    assert causes.connect_failure(exc) == expected


def test_a_tls_handshake_failing_is_named_and_the_message_has_no_address() -> None:
    """A provider configured with https:// in front of a plain-HTTP server."""
    async def main() -> GatewayError:
        async def plain_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(plain_http, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        settings = ProviderSettings(name="tls", kind="openai", api_base=f"https://127.0.0.1:{port}/v1",
                                    api_key="sk-secret-key", connect_timeout_s=5, timeout_s=10)
        upstream = Upstream(settings, {"authorization": "Bearer sk-secret-key"})
        await upstream.start()
        try:
            await upstream.call(f"{settings.base_url}/chat/completions", {}, "rid")
        except GatewayError as exc:
            return exc
        finally:
            await upstream.aclose()
            server.close()
        raise AssertionError("the call succeeded")

    err = asyncio.run(main())
    assert isinstance(err, UpstreamError) and err.cause == "TLS handshake failed"
    assert "127.0.0.1" not in err.message and "sk-secret" not in err.message
