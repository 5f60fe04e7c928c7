"""Credential → ``Principal``, on every request, without a database round
trip once a credential is warm.

Order: the master key (a hash compare), a JWT (the gateway's HS256 tokens,
or an identity provider's RS/ES tokens checked against its JWKS), else an API
key looked up by its hash. Results — refusals included — are cached for the
invalidation bus's TTL.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import jwt

from llm_gateway.auth.bootstrap import is_stored_master_key
from llm_gateway.auth.cache import TTLCache
from llm_gateway.auth.credentials import hash_secret, looks_like_jwt
from llm_gateway.auth.invalidation import InvalidationBus
from llm_gateway.auth.principal import MASTER, Principal, allowed
from llm_gateway.auth.tokens import TokenService
from llm_gateway.db import keys as key_repo
from llm_gateway.db import users as user_repo
from llm_gateway.db.engine import Database
from llm_gateway.db.models import ApiKey, User
from llm_gateway.db.types import utcnow
from llm_gateway.errors import AuthenticationFailed, DatabaseUnavailable

log = logging.getLogger("llm_gateway.auth")

TOUCH_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """A cached "no", so a flood of bad keys does not become a flood of queries."""

    message: str
    code: str = "invalid_api_key"


LoadFn = Callable[[], Awaitable[tuple[Principal | Refusal, str | None]]]


class Loader:
    """A deferred database read: ``await loader()`` → (answer, owning user id)."""

    __slots__ = ("_args", "_fn")

    def __init__(self, fn: Callable[..., Awaitable[tuple[Principal | Refusal, str | None]]], *args: Any) -> None:
        self._fn = fn
        self._args = args

    def __call__(self) -> Awaitable[tuple[Principal | Refusal, str | None]]:
        return self._fn(*self._args)


def _ignore_result(task: asyncio.Task[Any]) -> None:
    """Background reloads that fail leave the entry to expire; the next
    foreground load reports the problem."""
    if not task.cancelled():
        task.exception()


class ExternalVerifier(Protocol):
    """An identity provider's tokens (``auth.external``)."""

    algorithms: frozenset[str]

    async def verify(self, token: str) -> dict[str, Any]: ...

    async def principal(self, claims: dict[str, Any], db: Database) -> Principal: ...


def user_principal(user: User, key: ApiKey | None = None, shared: Sequence[key_repo.Budget] = ()) -> Principal:
    """``shared``: the budgets of the keys ``key`` was minted from (its
    ``budget_key_id`` and up), which its spend counts against too."""
    period = key.budget_period if key is not None and key.budget_usd is not None else None
    return Principal(
        kind="key" if key is not None else "user",
        role="admin" if user.role == "admin" else "user",
        user_id=user.id,
        key_id=key.id if key is not None else None,
        email=user.email,
        allowed_models=allowed(user.allowed_models, key.allowed_models if key is not None else None),
        user_rpm=user.rpm,
        user_tpm=user.tpm,
        key_rpm=key.rpm if key is not None else None,
        key_tpm=key.tpm if key is not None else None,
        budget_usd=key.budget_usd if key is not None else None,
        budget_period=period or (shared[0].period if shared else None),
        shared_budgets=tuple((b.key_id, b.budget_usd) for b in shared),
        expires_at=key.expires_at if key is not None else None,
    )


class Authenticator:
    def __init__(
        self,
        db: Database,
        cache: TTLCache[Principal | Refusal],
        bus: InvalidationBus,
        *,
        master_hash: str,
        tokens: TokenService,
        external: ExternalVerifier | None = None,
        stored_master: bool = False,
    ) -> None:
        self.db = db
        self.cache = cache
        self.bus = bus
        # A configured master key: a hash compare in memory. A generated one
        # (``stored_master``) is looked up like an API key, cached and evicted
        # the same way, so ``master-key rotate`` reaches every process.
        self.master_hash = master_hash
        self.stored_master = stored_master
        self.tokens = tokens
        self.external = external
        self._touched: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loading: dict[str, asyncio.Task[Principal | Refusal]] = {}

    async def authenticate(self, credential: str | None) -> Principal:
        if not credential:
            raise AuthenticationFailed(
                "Missing credential: send 'Authorization: Bearer <API key or token>'.", code="invalid_api_key"
            )
        if looks_like_jwt(credential):
            return await self._jwt(credential)
        digest = hash_secret(credential)
        if hmac.compare_digest(digest, self.master_hash):
            return MASTER
        found = await self._cached(digest, Loader(self._load_key, digest))
        if found.expires_at is not None and found.expires_at <= utcnow():
            raise AuthenticationFailed("This API key has expired.", code="invalid_api_key")
        self._touch(found)
        return found

    async def _cached(self, cache_key: str, load: LoadFn) -> Principal:
        """The cached answer for ``cache_key``; concurrent misses share one
        load (no stampede on the database when an entry expires), and an entry
        past half its life is reloaded in the background while still served."""
        now = time.monotonic()
        entry = self.cache.entry(cache_key, now)
        if entry is not None:
            if now >= entry.refresh_after and cache_key not in self._loading:
                self._start_load(cache_key, load).add_done_callback(_ignore_result)
            found = entry.value
        else:
            task = self._loading.get(cache_key) or self._start_load(cache_key, load)
            found = await asyncio.shield(task)
        if isinstance(found, Refusal):
            raise AuthenticationFailed(found.message, code=found.code)
        return found

    def _start_load(self, cache_key: str, load: LoadFn) -> asyncio.Task[Principal | Refusal]:
        task = asyncio.get_running_loop().create_task(self._load_into(cache_key, load))
        self._loading[cache_key] = task
        return task

    async def _load_into(self, cache_key: str, load: LoadFn) -> Principal | Refusal:
        try:
            generation = self.bus.generation
            found, user_id = await load()
            # A change broadcast while we read may not be in what we read.
            ttl = self.bus.ttl if generation == self.bus.generation else 0.0
            self.cache.put(cache_key, found, user_id, ttl)
            return found
        finally:
            self._loading.pop(cache_key, None)

    async def _load_key(self, digest: str) -> tuple[Principal | Refusal, str | None]:
        """The key's principal or refusal, and its owner (so that a change to
        the user evicts this entry too)."""
        try:
            async with self.db.session() as session:
                row = await key_repo.resolve(session, digest)
                master = row is None and self.stored_master and await is_stored_master_key(session, digest)
                # A key minted by a key shares its ancestors' budgets: read
                # once here, then cached with the key like everything else.
                budget_key_id = row[0].budget_key_id if row is not None else None
                shared = await key_repo.budget_chain(session, budget_key_id) if budget_key_id is not None else []
        except Exception as exc:
            log.error("key lookup failed: %s", type(exc).__name__)
            raise DatabaseUnavailable("The gateway cannot reach its database.") from None
        if master:
            return MASTER, None
        if row is None:
            return Refusal("Incorrect API key provided."), None
        key, user = row
        if key.revoked_at is not None:
            return Refusal("This API key has been revoked."), user.id
        if not user.is_active:
            return Refusal("This account is disabled."), user.id
        return user_principal(user, key, shared), user.id

    async def _jwt(self, token: str) -> Principal:
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise AuthenticationFailed("The token is malformed.", code="invalid_api_key") from None
        if alg == "HS256":
            claims = self.tokens.verify_access(token)
            return await self._user(str(claims["sub"]))
        if self.external is not None and alg in self.external.algorithms:
            external = self.external
            claims = await external.verify(token)
            subject = f"{claims.get('iss', '')}|{claims['sub']}"

            async def load_external() -> tuple[Principal | Refusal, str | None]:
                principal = await external.principal(claims, self.db)
                return principal, principal.user_id

            return await self._cached("x:" + subject, load_external)
        raise AuthenticationFailed("The token's algorithm is not accepted.", code="invalid_api_key")

    async def _user(self, user_id: str) -> Principal:
        return await self._cached("u:" + user_id, Loader(self._load_user, user_id))

    async def _load_user(self, user_id: str) -> tuple[Principal | Refusal, str | None]:
        try:
            async with self.db.session() as session:
                user = await user_repo.get_user(session, user_id)
        except Exception as exc:
            log.error("user lookup failed: %s", type(exc).__name__)
            raise DatabaseUnavailable("The gateway cannot reach its database.") from None
        if user is None or not user.is_active:
            return Refusal("This account does not exist or is disabled."), user_id
        return user_principal(user), user_id

    def _touch(self, principal: Principal) -> None:
        """Record ``last_used_at`` at most once a minute per key, off the hot path."""
        key_id = principal.key_id
        if key_id is None:
            return
        now = time.monotonic()
        if now - self._touched.get(key_id, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
            return
        self._touched[key_id] = now
        task = asyncio.get_running_loop().create_task(self._write_touch(key_id, utcnow()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_touch(self, key_id: str, when: datetime) -> None:
        try:
            async with self.db.session() as session:
                await key_repo.touch(session, [key_id], when)
        except Exception as exc:
            log.warning("could not record key use: %s", type(exc).__name__)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
