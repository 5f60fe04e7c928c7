"""Who is calling. Until accounts exist, the master key (when configured)
guards the API; without one the gateway is open and says so at start-up."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from llm_gateway.errors import AuthenticationFailed
from llm_gateway.settings import Settings


def bearer(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return request.headers.get("x-api-key") or None


def authenticate(request: Request, settings: Settings) -> None:
    if not settings.master_key:
        return
    credential = bearer(request)
    if credential is None:
        raise AuthenticationFailed(
            "Missing credential: send 'Authorization: Bearer <api key>'.", code="invalid_api_key"
        )
    if not hmac.compare_digest(credential.encode(), settings.master_key.encode()):
        raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")
