"""FastAPI dependencies for the account and admin APIs (not the /v1 hot
path, which authenticates without dependency injection)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from llm_gateway.api.auth import authenticate
from llm_gateway.auth.principal import Principal
from llm_gateway.db.paging import DEFAULT_LIMIT, MAX_LIMIT
from llm_gateway.errors import PermissionDenied
from llm_gateway.state import GatewayState


def get_gateway(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


Gateway = Annotated[GatewayState, Depends(get_gateway)]


async def get_session(gw: Gateway) -> AsyncIterator[AsyncSession]:
    async with gw.db.session() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


async def get_principal(request: Request, gw: Gateway) -> Principal:
    return await authenticate(request, gw)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def require_admin(principal: CurrentPrincipal) -> Principal:
    if not principal.is_admin:
        raise PermissionDenied("This endpoint needs the master key or an admin account.", code="admin_required")
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_admin)]

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size (max 100)")]
After = Annotated[str | None, Query(max_length=64, description="the last id of the previous page")]
DEFAULT_PAGE = DEFAULT_LIMIT
