"""LiteLLM's exceptions → the gateway's error tree, with their cause in words
for the log (``causes``), mapped once at the adapter's boundary.

LiteLLM raises OpenAI-SDK-shaped exceptions carrying the upstream's status
(``status_code``); a timeout is its ``Timeout`` (408) and a connection that
could not be made is an ``APIConnectionError`` or, for some providers, a 500
whose message says so. The provider's own message is kept for a 4xx about
the request (never for 401/403, which may quote the key). Anything else it
raises is a failed attempt (502, retryable), never a 500.
"""

from __future__ import annotations

import re
from typing import Any

from llm_gateway.errors import GatewayError, UpstreamError, UpstreamTimeout, upstream_status_error
from llm_gateway.providers import causes
from llm_gateway.providers.http import parse_retry_after

# "litellm.BadRequestError: AnthropicException - {…}": what follows the
# provider's exception name is the provider's message (or error body).
_PROVIDER_PART = re.compile(r"\b\w*Exception(?: \w+)? - ")
_CONNECT_WORDS = ("connection error", "cannot connect", "connect call failed", "connection refused",
                  "name or service not known", "nodename nor servname")
MAX_CLIENT_MESSAGE = 2000  # characters of a provider's message passed on to the client


def _headers(exc: BaseException) -> Any:
    for name in ("litellm_response_headers", "headers"):
        got = getattr(exc, name, None)
        if got:
            return got
    response = getattr(exc, "response", None)
    return getattr(response, "headers", None) or {}


def provider_text(exc: BaseException) -> str:
    """The provider's message inside one of LiteLLM's exceptions, whitespace
    folded (an error body's ``error.message`` when the text is one)."""
    response = getattr(exc, "response", None)
    try:
        body = response.content if response is not None else b""
    except Exception:  # a streamed response not read: no body to quote
        body = b""
    if isinstance(body, bytes) and body.strip():
        text = body.decode("utf-8", "replace")
    else:
        text = str(getattr(exc, "message", None) or exc)
        match = _PROVIDER_PART.search(text)
        if match is not None:
            text = text[match.end():]
    data = causes.error_document(text.encode())
    err = data.get("error") if data is not None else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        text = err["message"]
    return " ".join(text.split())[:MAX_CLIENT_MESSAGE]


def map_exception(exc: Exception, provider: str) -> GatewayError:
    """One of LiteLLM's exceptions (or anything else it let through) as a GatewayError."""
    if isinstance(exc, GatewayError):
        return exc
    name = type(exc).__name__
    mro = {c.__name__ for c in type(exc).__mro__}
    if isinstance(exc, TimeoutError) or "Timeout" in mro or "APITimeoutError" in mro:
        return UpstreamTimeout(f"The {provider} provider timed out.", cause=causes.timed_out("total"))
    status = getattr(exc, "status_code", None)
    message = provider_text(exc)
    if "APIConnectionError" in mro or (status == 500 and any(w in message.lower() for w in _CONNECT_WORDS)):
        return UpstreamError(f"Could not connect to the {provider} provider.",
                             cause=f"connection failed ({message or name})"[: causes.MAX_MESSAGE])
    if not isinstance(status, int) or not 400 <= status <= 599:
        return UpstreamError(f"The request to the {provider} provider failed.",
                             cause=f"LiteLLM raised {name}: {message}"[: causes.MAX_MESSAGE])
    err = upstream_status_error(status, message or None, retry_after=parse_retry_after(_headers(exc)),
                                provider=provider)
    if status == 404 and err.code is None:
        err.code = "model_not_found"  # (LiteLLM's NotFoundError: the upstream knows no such model)
    err.cause = causes.http_status(status, message.encode())
    return err
