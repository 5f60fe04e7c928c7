"""``/admin/users`` and ``/admin/keys``: the master key or an admin account
manages users and their API keys (SPEC §3). Anyone else: 403
``admin_required``; no credential: 401."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from llm_gateway import accounts
from llm_gateway.accounts import NewKey, NewUser, UserChanges
from llm_gateway.api.deps import DEFAULT_PAGE, After, Gateway, Limit, Session, require_admin
from llm_gateway.api.schemas_accounts import KeyCreated, KeyList, KeyOut, UserList, UserOut

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.post("/users", status_code=201, response_model=UserOut)
async def create_user(body: NewUser, session: Session) -> UserOut:
    return UserOut.of(await accounts.create_user(session, body))


@router.get("/users", response_model=UserList)
async def list_users(session: Session, limit: Limit = DEFAULT_PAGE, after: After = None) -> UserList:
    return UserList.of(*await accounts.list_users(session, limit, after))


@router.get("/users/{user_id}", response_model=UserOut)
async def get_user(user_id: str, session: Session) -> UserOut:
    return UserOut.of(await accounts.get_user(session, user_id))


@router.patch("/users/{user_id}", response_model=UserOut)
async def update_user(user_id: str, body: UserChanges, session: Session, gw: Gateway) -> UserOut:
    user = await accounts.get_user(session, user_id)
    return UserOut.of(await accounts.update_user(session, gw.auth.bus, user, body))


@router.post("/users/{user_id}/keys", status_code=201, response_model=KeyCreated)
async def create_key(user_id: str, body: NewKey, session: Session) -> KeyCreated:
    user = await accounts.get_user(session, user_id)
    return KeyCreated.created(*await accounts.create_key(session, user, body))


@router.get("/users/{user_id}/keys", response_model=KeyList)
async def list_user_keys(user_id: str, session: Session, limit: Limit = DEFAULT_PAGE, after: After = None) -> KeyList:
    user = await accounts.get_user(session, user_id)
    return KeyList.of(*await accounts.list_keys(session, user.id, limit, after))


@router.get("/keys", response_model=KeyList)
async def list_keys(
    session: Session, limit: Limit = DEFAULT_PAGE, after: After = None,
    user_id: Annotated[str | None, Query(max_length=accounts.MAX_ID, description="only this user's keys")] = None,
) -> KeyList:
    user_id = user_id or None  # "?user_id=" alone: every user's keys
    if user_id is not None and not accounts.plausible_id(user_id):
        return KeyList.of([], False)  # no such user, so no such keys
    return KeyList.of(*await accounts.list_keys(session, user_id, limit, after))


@router.get("/keys/{key_id}", response_model=KeyOut)
async def get_key(key_id: str, session: Session) -> KeyOut:
    return KeyOut.of(await accounts.get_key(session, key_id))


@router.delete("/keys/{key_id}", response_model=KeyOut)
async def revoke_key(key_id: str, session: Session, gw: Gateway) -> KeyOut:
    """Idempotent: revoking a revoked key answers it again, unchanged."""
    key = await accounts.get_key(session, key_id)
    return KeyOut.of(await accounts.revoke_key(session, gw.auth.bus, key))
