"""``/me`` and ``/me/keys``: a user's own account and keys, with one of their
API keys or a JWT. Nothing here changes the user's role, limits or models,
and a key made here can do nothing its maker cannot (models, limits,
budget, expiry). Another user's key ids answer 404, exactly like unknown
ones. (``/me/usage`` is billing's.)"""

from __future__ import annotations

from fastapi import APIRouter

from llm_gateway import accounts
from llm_gateway.accounts import NewKey
from llm_gateway.api.deps import DEFAULT_PAGE, After, CurrentPrincipal, Gateway, Limit, Session
from llm_gateway.api.schemas_accounts import KeyCreated, KeyList, KeyOut, UserOut
from llm_gateway.auth.principal import Principal
from llm_gateway.db import users as user_repo
from llm_gateway.db.models import User
from llm_gateway.errors import NotFound

router = APIRouter(prefix="/me", tags=["me"])


async def _user(principal: Principal, session: Session) -> User:
    """The caller's user, read fresh (the principal may be a second old)."""
    if principal.user_id is None:
        raise NotFound(
            "The master key belongs to no user: /me needs a user's API key or access token.",
            code="user_not_found",
        )
    user = await user_repo.get_user(session, principal.user_id)
    if user is None:
        raise NotFound("Your user no longer exists.", code="user_not_found")
    return user


@router.get("", response_model=UserOut)
async def me(principal: CurrentPrincipal, session: Session) -> UserOut:
    return UserOut.of(await _user(principal, session))


@router.get("/keys", response_model=KeyList)
async def list_keys(
    principal: CurrentPrincipal, session: Session, limit: Limit = DEFAULT_PAGE, after: After = None
) -> KeyList:
    user = await _user(principal, session)
    return KeyList.of(*await accounts.list_keys(session, user.id, limit, after))


@router.post("/keys", status_code=201, response_model=KeyCreated)
async def create_key(body: NewKey, principal: CurrentPrincipal, session: Session) -> KeyCreated:
    """A key made with a key inherits that key's restrictions (models, rpm,
    tpm, expiry): it may narrow them, never widen them (403 naming the
    field). It shares that key's budget; one it asks for is its own, checked
    too."""
    user = await _user(principal, session)
    spec, budget_key_id = await accounts.narrow_for_caller(session, body, user, principal.key_id)
    return KeyCreated.created(*await accounts.create_key(session, user, spec, budget_key_id=budget_key_id))


@router.get("/keys/{key_id}", response_model=KeyOut)
async def get_key(key_id: str, principal: CurrentPrincipal, session: Session) -> KeyOut:
    user = await _user(principal, session)
    return KeyOut.of(await accounts.get_key(session, key_id, user_id=user.id))


@router.delete("/keys/{key_id}", response_model=KeyOut)
async def revoke_key(key_id: str, principal: CurrentPrincipal, session: Session, gw: Gateway) -> KeyOut:
    user = await _user(principal, session)
    key = await accounts.get_key(session, key_id, user_id=user.id)
    return KeyOut.of(await accounts.revoke_key(session, gw.auth.bus, key))
