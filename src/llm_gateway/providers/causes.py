"""Why an upstream attempt failed, in a few words for the operator's log.

The client gets a status and a message that never name an address; the log
line of a failed attempt (written by the router) says what the operator needs
to fix it: "connection refused", "DNS lookup failed", "TLS handshake failed",
"timed out (connect)", "HTTP 503: <the provider's message>", "invalid
response". The words are decided here, where the transport's exceptions are
still at hand, and travel on the mapped error as ``GatewayError.cause``.
"""

from __future__ import annotations

import errno
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

INVALID_RESPONSE = "invalid response"
MAX_MESSAGE = 200  # characters of a provider's error message kept in the log

# A connection that fails on every address of a host raises one OSError that
# lists them all, without an errno of its own.
_REFUSED_TEXT = f"[Errno {errno.ECONNREFUSED}]"
_CONNECT_ERRNOS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out (connect)",
}


def address(url: str) -> str:
    """``scheme://host:port`` of a provider's base URL: no path, no query
    (it may hold a key), no user or password."""
    parts = urlsplit(url)
    scheme = parts.scheme or "http"
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"  # IPv6
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if scheme == "https" else 80
    return f"{scheme}://{host}:{port}"


def timed_out(phase: str) -> str:
    """``phase``: connect, first byte, idle between chunks, or total."""
    return f"timed out ({phase})"


def connect_failure(exc: aiohttp.ClientConnectorError) -> str:
    """Why a connection could not be made."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    dns_error = getattr(aiohttp, "ClientConnectorDNSError", None)  # aiohttp >= 3.11
    if dns_error is not None and isinstance(exc, dns_error):
        return "DNS lookup failed"
    cause = exc.os_error
    if isinstance(cause, socket.gaierror):
        return "DNS lookup failed"
    if isinstance(cause, ssl.SSLError):
        return "TLS handshake failed"
    known = _CONNECT_ERRNOS.get(cause.errno or 0)
    if known is not None:
        return known
    if _REFUSED_TEXT in str(cause):
        return "connection refused"
    detail = cause.strerror or type(cause).__name__
    return f"connection failed ({detail})"


def broken_connection(exc: aiohttp.ClientError) -> str:
    """Why a connection already made failed during the exchange."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed by the provider"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "connection closed mid-answer"
    if isinstance(exc, aiohttp.ClientOSError) and exc.errno == errno.ECONNRESET:
        return "connection reset"
    return f"connection failed ({type(exc).__name__})"


def http_status(status: int, body: bytes) -> str:
    """``HTTP <status>: <the provider's message>``, the message cut to
    ``MAX_MESSAGE`` characters. A refusal of the gateway's credentials
    (401/403) is not quoted: its message may echo part of the key."""
    if status in (401, 403):
        return f"HTTP {status}: the provider rejected the gateway's credentials"
    message = provider_message(body)
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"


def error_document(body: bytes) -> dict[str, Any] | None:
    """A provider's error body as a JSON object, if it is one."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Gemini sometimes wraps the error in a list
    return data if isinstance(data, dict) else None


def provider_message(body: bytes) -> str:
    """The message of an OpenAI, Anthropic or Gemini error body, else the
    body's text; whitespace folded, at most ``MAX_MESSAGE`` characters."""
    text: str | None = None
    data = error_document(body)
    if data is not None:
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            text = err["message"]
        elif isinstance(err, str):
            text = err
    if text is None:
        text = body.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
