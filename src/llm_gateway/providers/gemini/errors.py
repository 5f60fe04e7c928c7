"""Gemini's error answers mapped into the gateway's error tree (here, not
in ``wire/gemini``, as the mapping builds on the shared HTTP error mapper)."""

from __future__ import annotations

import re
from typing import Any

import orjson

from llm_gateway.errors import GatewayError
from llm_gateway.providers.http import error_from_response

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def _error_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, list) and data:  # Gemini sometimes wraps the error in a list
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    return err if isinstance(err, dict) else None


def _details(err: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    details = err.get("details")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, dict) and str(d.get("@type", "")).endswith(kind)]


def error(status: int, body: bytes, headers: Any, provider: str) -> GatewayError:
    """Map a Gemini error answer (or an error object inside a stream).

    Gemini answers a bad key with 400 ``API_KEY_INVALID`` rather than 401, and
    its message may quote the key, so that is treated as the provider's 401
    (SPEC §8: 502 with the gateway's own message). A 429's ``RetryInfo``
    delay becomes ``retry_after`` when no ``Retry-After`` header came.
    """
    err = _error_object(body) or {}
    reasons = {str(d.get("reason", "")) for d in _details(err, "google.rpc.ErrorInfo")}
    if any(r.startswith("API_KEY_") for r in reasons):
        return error_from_response(401, b"", headers, provider)
    mapped = error_from_response(status, body, headers, provider)
    if mapped.retry_after is None:
        for info in _details(err, "google.rpc.RetryInfo"):
            match = _DURATION.match(str(info.get("retryDelay", "")))
            if match:
                mapped.retry_after = float(match.group(1))
    return mapped
