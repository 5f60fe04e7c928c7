"""An identity provider's JWTs (``auth.external``, SPEC §3, §8): RS/PS/ES
tokens checked against the provider's JWKS, issuer, audience and expiry, and
the gateway user each identity maps to.

The JWKS is cached. A token naming a ``kid`` the cache lacks makes us refetch
it, at most once per ``refetch_interval_s`` (10 s), so a newly published key
works within 10 s while a flood of made-up ``kid``s costs the provider one
request per interval. The cache is also refreshed once it is ``max_age_s``
old (10 minutes) so a withdrawn key stops working. Concurrent requests share
one in-flight fetch. When a refresh fails the keys we already hold stay in
use; when we have never managed to fetch the JWKS at all, the caller gets 503
``jwks_unavailable`` (the token may be fine — we cannot tell), never a 500.

Only asymmetric keys are ever used: ``kty: oct`` JWKs are dropped when the
JWKS is read, each key must fit the token's ``alg`` (family, curve, and the
JWK's own ``alg`` when it names one), and HS*/``none`` tokens never get here
(the authenticator sends HS256 to the gateway's own verifier; anything else
outside ``algorithms`` is refused).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from llm_gateway.accounts import storable, valid_email
from llm_gateway.auth.authenticator import user_principal
from llm_gateway.auth.principal import Principal
from llm_gateway.db import users as user_repo
from llm_gateway.db.engine import Database
from llm_gateway.db.models import User
from llm_gateway.errors import AuthenticationFailed, Conflict, DatabaseUnavailable, GatewayError
from llm_gateway.settings import ExternalAuth

log = logging.getLogger("llm_gateway.auth")

ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "ES256", "ES384"})
_FAMILY = {"RS256": "RSA", "RS384": "RSA", "RS512": "RSA", "PS256": "RSA", "ES256": "EC", "ES384": "EC"}
_CURVE = {"ES256": "secp256r1", "ES384": "secp384r1"}
MIN_RSA_BITS = 2048
LEEWAY_S = 30
REFETCH_INTERVAL_S = 10.0
MAX_AGE_S = 600.0
FETCH_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 1 << 20
MAX_SUBJECT = 512  # users.external_subject holds "<iss>|<sub>"

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class IdentityProviderUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    default_code = "jwks_unavailable"


class InvalidJwks(ValueError):
    """The JWKS endpoint answered something that is not a JWKS."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One usable key from the JWKS: always a public RSA or EC key."""

    kid: str
    kty: str
    alg: str | None
    key: PublicKey

    def fits(self, alg: str) -> bool:
        if _FAMILY.get(alg) != self.kty or (self.alg is not None and self.alg != alg):
            return False
        if isinstance(self.key, ec.EllipticCurvePublicKey):
            return self.key.curve.name == _CURVE.get(alg)
        return True


def _public(key: Any) -> PublicKey | None:
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        key = key.public_key()  # a JWKS should never hold private parts; use only the public half
    if isinstance(key, rsa.RSAPublicKey):
        return key if key.key_size >= MIN_RSA_BITS else None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key
    return None


def _signing_key(jwk: Any) -> SigningKey | None:
    """A JWK we can verify signatures with, or ``None`` (symmetric, encryption-only,
    unknown type, malformed, weak)."""
    if not isinstance(jwk, dict):
        return None
    kid, kty, alg, use = jwk.get("kid"), jwk.get("kty"), jwk.get("alg"), jwk.get("use")
    if not isinstance(kid, str) or not kid or use not in (None, "sig") or (alg is not None and alg not in ALGORITHMS):
        return None
    loader = {"RSA": RSAAlgorithm.from_jwk, "EC": ECAlgorithm.from_jwk}.get(kty) if isinstance(kty, str) else None
    if loader is None:  # "oct" (an HMAC secret) and anything else we do not know
        return None
    try:
        key = _public(loader(jwk))
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
    return SigningKey(kid, str(kty), alg, key) if key is not None else None


def parse_jwks(body: bytes) -> dict[str, SigningKey]:
    """``{"keys": [...]}`` → usable keys by ``kid``. Keys we cannot use are
    skipped; a document that is not a JWKS at all raises ``InvalidJwks``."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidJwks("not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise InvalidJwks("no 'keys' list")
    keys: dict[str, SigningKey] = {}
    for jwk in document["keys"]:
        found = _signing_key(jwk)
        if found is None:
            log.debug("JWKS entry skipped (not a usable signing key)")
        elif found.kid not in keys:
            keys[found.kid] = found
    return keys


def _invalid(message: str) -> AuthenticationFailed:
    return AuthenticationFailed(message, code="invalid_api_key")


class ExternalJWTVerifier:
    """Verifies an identity provider's tokens and maps them to gateway users.

    ``clock``, ``refetch_interval_s`` and ``max_age_s`` are injectable for tests.
    """

    algorithms: frozenset[str] = ALGORITHMS

    def __init__(
        self,
        settings: ExternalAuth,
        *,
        refetch_interval_s: float = REFETCH_INTERVAL_S,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.refetch_interval_s = refetch_interval_s
        self.max_age_s = max_age_s
        self.clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._loaded = False
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S),
                headers={"user-agent": "llm-gateway", "accept": "application/json"},
            )

    async def aclose(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
            await asyncio.gather(self._inflight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- tokens -----------------------------------------------------------

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims once its signature, ``exp`` (required), ``nbf``,
        ``iat``, ``iss`` and ``aud`` check out; else 401 (``token_expired`` for
        an expired token, ``invalid_api_key`` otherwise)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("The token is malformed.") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _invalid("The token's algorithm is not accepted.")
        if not isinstance(kid, str) or not kid:
            raise _invalid("The token does not name its signing key ('kid').")
        key = await self._key(kid)
        if key is None:
            raise _invalid("The token is signed with a key the identity provider does not publish.")
        if not key.fits(alg):
            raise _invalid("The token's signing key does not match its algorithm.")
        audience = self.settings.audience
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=[alg], issuer=self.settings.issuer, audience=audience,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "sub"], "verify_aud": audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthenticationFailed("The token has expired.", code="token_expired") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _invalid("The token is invalid.") from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"] or not isinstance(claims.get("iss"), str):
            raise _invalid("The token is invalid.")
        return claims

    async def _key(self, kid: str) -> SigningKey | None:
        now = self.clock()
        stale = not self._loaded or now - self._fetched_at >= self.max_age_s
        if (stale or kid not in self._keys) and self._may_fetch(now):
            await self._refresh()
        if not self._loaded:
            raise IdentityProviderUnavailable("The identity provider's signing keys cannot be fetched right now.")
        return self._keys.get(kid)

    def _may_fetch(self, now: float) -> bool:
        return (
            self._inflight is not None
            or self._attempted_at is None
            or now - self._attempted_at >= self.refetch_interval_s
        )

    async def _refresh(self) -> None:
        """Join the fetch in flight, or start one. Shielded: a client that
        hangs up must not cancel the fetch other requests are waiting on."""
        if self._inflight is None:
            self._attempted_at = self.clock()
            task = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight = task
            task.add_done_callback(self._fetch_done)
        await asyncio.shield(self._inflight)

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _fetch(self) -> None:
        await self.start()
        assert self._session is not None
        url = self.settings.jwks_url
        try:
            async with self._session.get(url) as response:
                if response.status != 200:
                    raise InvalidJwks(f"HTTP {response.status}")
                body = await response.content.read(MAX_JWKS_BYTES + 1)
            if len(body) > MAX_JWKS_BYTES:
                raise InvalidJwks("larger than 1 MiB")
            keys = parse_jwks(body)
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # InvalidJwks is a ValueError
            detail = str(exc) if isinstance(exc, InvalidJwks) else type(exc).__name__
            log.warning("could not refresh the identity provider's JWKS (%s); %s", detail,
                        "keeping the keys already held" if self._loaded else "no keys held yet")
            return
        self._keys = keys
        self._loaded = True
        self._fetched_at = self.clock()

    # -- users ------------------------------------------------------------

    async def principal(self, claims: dict[str, Any], db: Database) -> Principal:
        """The gateway user for this identity (``<iss>|<sub>``).

        An unknown identity gets an account only with ``auto_create_users``,
        taking the token's ``email`` claim; a token without one is refused
        rather than given a made-up address. If a local account already has
        that email, the identity is linked to it only when the token says
        ``email_verified: true``: otherwise anyone able to register that
        address at the identity provider, unverified, would take over the
        local account (its balance, keys and role). An account already linked
        to another identity is never relinked.
        """
        subject = f"{claims['iss']}|{claims['sub']}"
        try:
            storable(subject)
        except ValueError:
            raise _invalid("The token's 'iss' or 'sub' claim cannot be stored.") from None
        if len(subject) > MAX_SUBJECT:
            raise _invalid("The token's 'iss' and 'sub' claims are too long.")
        try:
            async with db.session() as session:
                user = await self._find_or_create(session, subject, claims)
        except GatewayError:
            raise
        except Exception as exc:
            log.error("external user lookup failed: %s", type(exc).__name__)
            raise DatabaseUnavailable("The gateway cannot reach its database.") from None
        if not user.is_active:
            raise _invalid("This account is disabled.")
        return user_principal(user)

    async def _find_or_create(self, session: AsyncSession, subject: str, claims: dict[str, Any]) -> User:
        user = await user_repo.get_by_external_subject(session, subject)
        if user is not None:
            return user
        if not self.settings.auto_create_users:
            raise _invalid("No gateway account is linked to this identity.")
        email = claims.get("email")
        if not isinstance(email, str):
            raise _invalid("The token carries no 'email' claim, which a new gateway account needs.")
        try:  # the same check as the admin API's: an identity provider is no more trusted with what it stores
            email = valid_email(email)
        except ValueError as exc:
            raise _invalid(f"The token's 'email' claim cannot name a gateway account: it {exc}.") from None
        existing = await user_repo.get_by_email(session, email)
        if existing is not None:
            return await self._link(session, existing, subject, claims)
        try:
            return await user_repo.create_user(session, email=email, role="user", external_subject=subject)
        except Conflict:
            # A concurrent first request for the same identity won the race.
            return await self._reread(session, subject)

    async def _link(self, session: AsyncSession, user: User, subject: str, claims: dict[str, Any]) -> User:
        if user.external_subject == subject:  # created by a concurrent request for this identity
            return user
        if user.external_subject is not None:
            raise _invalid("This email belongs to an account linked to another identity.")
        if claims.get("email_verified") is not True:
            raise _invalid("An account with this email exists and the identity provider has not verified it.")
        user.external_subject = subject
        try:
            await session.commit()
        except IntegrityError:  # the same identity, linked or created by a concurrent request
            await session.rollback()
            return await self._reread(session, subject)
        return user

    async def _reread(self, session: AsyncSession, subject: str) -> User:
        user = await user_repo.get_by_external_subject(session, subject)
        if user is None:
            raise _invalid("This email belongs to another account.")
        return user
