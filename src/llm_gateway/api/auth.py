"""Reading the caller's credential from a request."""

from __future__ import annotations

from starlette.requests import Request

from llm_gateway.auth.principal import Principal
from llm_gateway.state import GatewayState


def bearer(request: Request) -> str | None:
    """``Authorization: Bearer <credential>``, or Anthropic-style ``x-api-key``."""
    value = request.headers.get("authorization")
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip() or None
    return request.headers.get("x-api-key") or None


async def authenticate(request: Request, gw: GatewayState) -> Principal:
    return await gw.auth.authenticate(bearer(request))
