"""The dashboard's sign-in session: a signed, stateless cookie.

The cookie (``gw_ui``, ``HttpOnly``, ``SameSite=Strict``, ``Path=/ui``,
``Secure`` when the request came over https) names who signed in and how,
never a credential: a user id (email and password, or a gateway token), a
key id (an API key pasted in), or "master" with a keyed fingerprint of the
master key's hash. Every request reads the account again (one small query),
so a disabled user, a revoked key, a changed password or a rotated master
key ends the session at once. Its signing key is derived from the gateway's
JWT secret, which every worker and instance shares.

Each session carries a random CSRF token, which every write must send back
(a form field or the ``x-csrf-token`` header); before sign-in, a second
cookie holds the sign-in forms' token (double submit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from llm_gateway.auth import bootstrap
from llm_gateway.auth.authenticator import user_principal
from llm_gateway.auth.principal import MASTER, Principal
from llm_gateway.db import keys as key_repo
from llm_gateway.db import system
from llm_gateway.db import users as user_repo
from llm_gateway.db.models import User
from llm_gateway.db.types import utcnow
from llm_gateway.state import GatewayState

COOKIE = "gw_ui"
PRE_COOKIE = "gw_ui_csrf"  # the sign-in forms' CSRF token, before any session exists
COOKIE_PATH = "/ui"
SESSION_TTL_S = 12 * 3600
Via = Literal["password", "key", "master"]


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking at the dashboard, read afresh for this request."""

    principal: Principal
    user: User | None  # None for the master key
    via: Via
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin

    @property
    def label(self) -> str:
        return self.user.email if self.user is not None else "Master key"


class SessionKeys:
    """The HMAC key for cookies, derived once from the shared JWT secret."""

    def __init__(self) -> None:
        self._key: bytes | None = None

    async def key(self, gw: GatewayState) -> bytes:
        if self._key is None:
            secret = await bootstrap.jwt_secret(gw.db, gw.settings)
            self._key = hmac.new(secret.encode(), b"llm-gateway ui session v1", hashlib.sha256).digest()
        return self._key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def fingerprint(key: bytes, what: str) -> str:
    return _b64(hmac.new(key, what.encode(), hashlib.sha256).digest()[:16])


def encode(key: bytes, payload: dict[str, Any]) -> str:
    body = _b64(orjson.dumps(payload))
    return body + "." + _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def decode(key: bytes, value: str) -> dict[str, Any] | None:
    """The payload of an untampered, unexpired cookie, else None."""
    body, _, mac = value.partition(".")
    expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    if not mac or not hmac.compare_digest(mac, expected):
        return None
    try:
        payload = orjson.loads(_unb64(body))
    except (ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int) or payload["exp"] < time.time():
        return None
    return payload


def is_https(request: Request) -> bool:
    """Over https, as uvicorn saw it: its proxy-headers support takes
    ``X-Forwarded-Proto`` from trusted proxies (``FORWARDED_ALLOW_IPS``)."""
    return request.url.scheme == "https"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True, samesite="strict",
                        secure=is_https(request))


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=is_https(request))


async def _master_digest(gw: GatewayState, session: AsyncSession) -> str | None:
    """The hash of the master key in force now."""
    if gw.settings.master_key:
        return gw.auth.master_hash
    return await system.get_value(session, bootstrap.MASTER_HASH)


async def new_session(gw: GatewayState, keys: SessionKeys, session: AsyncSession, principal: Principal,
                      *, master_digest: str | None = None) -> str:
    """The cookie value for a principal that just proved who it is."""
    key = await keys.key(gw)
    payload: dict[str, Any] = {"c": secrets.token_urlsafe(24), "exp": int(time.time()) + SESSION_TTL_S}
    if principal.kind == "master":
        assert master_digest is not None
        payload |= {"k": "master", "fp": fingerprint(key, "mk:" + master_digest)}
    elif principal.kind == "key":
        payload |= {"k": "key", "u": principal.user_id, "key": principal.key_id}
    else:
        assert principal.user_id is not None
        user = await user_repo.get_user(session, principal.user_id)
        assert user is not None
        payload |= {"k": "password", "u": user.id, "fp": fingerprint(key, "pw:" + (user.password_hash or ""))}
    return encode(key, payload)


async def viewer(gw: GatewayState, keys: SessionKeys, session: AsyncSession, cookie: str | None) -> Viewer | None:
    """The signed-in viewer, or None when the cookie is missing, forged,
    expired, or no longer matches the account."""
    if not cookie:
        return None
    key = await keys.key(gw)
    payload = decode(key, cookie)
    if payload is None:
        return None
    kind, csrf = payload.get("k"), str(payload.get("c", ""))
    if kind == "master":
        digest = await _master_digest(gw, session)
        if digest is None or not hmac.compare_digest(str(payload.get("fp")), fingerprint(key, "mk:" + digest)):
            return None
        return Viewer(MASTER, None, "master", csrf)
    user = await user_repo.get_user(session, str(payload.get("u", "")))
    if user is None or not user.is_active:
        return None
    if kind == "password":
        if not hmac.compare_digest(str(payload.get("fp")), fingerprint(key, "pw:" + (user.password_hash or ""))):
            return None
        return Viewer(user_principal(user), user, "password", csrf)
    if kind == "key":
        api_key = await key_repo.get_key(session, str(payload.get("key", "")))
        if api_key is None or api_key.user_id != user.id or api_key.revoked_at is not None \
                or (api_key.expires_at is not None and api_key.expires_at <= utcnow()):
            return None
        shared = await key_repo.budget_chain(session, api_key.budget_key_id) if api_key.budget_key_id else []
        return Viewer(user_principal(user, api_key, shared), user, "key", csrf)
    return None


def csrf_ok(expected: str, sent: str | None) -> bool:
    return bool(expected) and sent is not None and hmac.compare_digest(expected.encode(), sent.encode())


def same_origin(request: Request) -> bool:
    """A browser names the page a write came from (``Origin``); one from
    another site is refused even before the token is checked."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")
