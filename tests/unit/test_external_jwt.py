"""ExternalJWTVerifier against a fake identity provider over real HTTP, and
its user mapping on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import jwt
import pytest
from starlette.applications import Starlette

from llm_gateway.auth.external import ExternalJWTVerifier, IdentityProviderUnavailable, parse_jwks
from llm_gateway.db import migrate
from llm_gateway.db import users as user_repo
from llm_gateway.db.engine import Database
from llm_gateway.errors import AuthenticationFailed
from llm_gateway.settings import ExternalAuth
from tests.databases import database
from tests.fakes import jwks_server as idp
from tests.fakes.server import LiveServer, serve_in_thread

T = TypeVar("T")
RSA = idp.rsa_key("rsa-1")
EC = idp.ec_key("ec-1")


def run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def app() -> Starlette:
    return idp.create_app()


@pytest.fixture(scope="module")
def server(app: Starlette) -> Iterator[LiveServer]:
    live = serve_in_thread(app)
    yield live
    live.stop()


@pytest.fixture
def state(app: Starlette, server: LiveServer) -> idp.JwksState:
    jwks: idp.JwksState = app.state.jwks
    jwks.keys = [RSA.jwk(), EC.jwk()]
    jwks.fetches, jwks.status, jwks.body = 0, 200, None
    return jwks


def settings(server: LiveServer, **changes: Any) -> ExternalAuth:
    values: dict[str, Any] = {"jwks_url": server.url + idp.JWKS_PATH, "issuer": idp.ISSUER,
                              "audience": idp.AUDIENCE, "auto_create_users": True}
    return ExternalAuth(**(values | changes))


def verify(verifier: ExternalJWTVerifier, token: str) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        try:
            return await verifier.verify(token)
        finally:
            await verifier.aclose()

    return asyncio.run(main())


def refused(verifier: ExternalJWTVerifier, token: str, code: str = "invalid_api_key") -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as caught:
        verify(verifier, token)
    assert caught.value.status_code == 401
    assert caught.value.code == code
    return caught.value


@pytest.fixture
def verifier(server: LiveServer, state: idp.JwksState) -> ExternalJWTVerifier:
    return ExternalJWTVerifier(settings(server))


# -- accepted --------------------------------------------------------------


@pytest.mark.parametrize("key", [RSA, EC, idp.rsa_key("rsa-384", "RS384"), idp.rsa_key("ps-256", "PS256"),
                                 idp.ec_key("ec-384", "ES384")], ids=lambda k: k.alg)
def test_valid_tokens_are_accepted(server: LiveServer, state: idp.JwksState, key: idp.SigningKey) -> None:
    state.keys = [RSA.jwk(), EC.jwk(), key.jwk()]
    found = verify(ExternalJWTVerifier(settings(server)), key.sign(idp.claims(sub="alice")))
    assert found["sub"] == "alice" and found["iss"] == idp.ISSUER
    assert state.fetches == 1


def test_jwk_without_alg_is_used_by_family(server: LiveServer, state: idp.JwksState) -> None:
    state.keys = [RSA.jwk(with_alg=False), EC.jwk(with_alg=False)]
    assert verify(ExternalJWTVerifier(settings(server)), RSA.sign(idp.claims()))["sub"] == "idp-user-1"
    assert verify(ExternalJWTVerifier(settings(server)), EC.sign(idp.claims()))["sub"] == "idp-user-1"


def test_audience_list_and_no_configured_checks(server: LiveServer, state: idp.JwksState) -> None:
    token = RSA.sign(idp.claims(aud=["other", idp.AUDIENCE]))
    assert verify(ExternalJWTVerifier(settings(server)), token)["aud"] == ["other", idp.AUDIENCE]
    loose = ExternalJWTVerifier(settings(server, issuer=None, audience=None))
    assert verify(loose, RSA.sign(idp.claims(iss="https://anyone/", aud="whatever")))["iss"] == "https://anyone/"


def test_small_clock_skew_is_tolerated(verifier: ExternalJWTVerifier) -> None:
    token = RSA.sign(idp.claims(exp=int(time.time()) - 5, nbf=int(time.time()) + 5))
    assert verify(verifier, token)["sub"] == "idp-user-1"


# -- refused ---------------------------------------------------------------


def test_alg_none_is_refused(verifier: ExternalJWTVerifier) -> None:
    for alg in ("none", "None", "NONE"):
        refused(verifier, idp.unsigned_token(idp.claims(), kid=RSA.kid, alg=alg))


def test_hs256_signed_with_the_public_key_is_refused(verifier: ExternalJWTVerifier, state: idp.JwksState) -> None:
    for alg in ("HS256", "HS384", "HS512"):
        refused(verifier, idp.hmac_token(idp.claims(), RSA.public_pem(), alg=alg, kid=RSA.kid))
    assert state.fetches == 0  # refused on its header, before any key is looked at


def test_symmetric_jwk_is_never_used(server: LiveServer, state: idp.JwksState) -> None:
    """A JWKS that (wrongly) publishes an ``oct`` key under the token's kid:
    the token names RS256 but the only key by that kid is an HMAC secret."""
    secret = jwt.utils.base64url_encode(b"0123456789abcdef0123456789abcdef").decode()
    state.keys = [{"kty": "oct", "kid": "shared", "k": secret, "alg": "HS256"}]
    assert parse_jwks(json.dumps({"keys": state.keys}).encode()) == {}
    forged = idp.hmac_token(idp.claims(), b"0123456789abcdef0123456789abcdef", kid="shared")
    refused(ExternalJWTVerifier(settings(server)), forged)
    refused(ExternalJWTVerifier(settings(server)), RSA.sign(idp.claims(), headers={"kid": "shared"}))


def test_key_must_fit_the_algorithm(server: LiveServer, state: idp.JwksState) -> None:
    # An RSA key cannot check an ES256 token, a P-256 key cannot check ES384,
    # and a JWK that names RS256 is not used for PS256.
    refused(ExternalJWTVerifier(settings(server)), EC.sign(idp.claims(), headers={"kid": RSA.kid}))
    p384 = idp.ec_key("ec-1", "ES384")
    refused(ExternalJWTVerifier(settings(server)), p384.sign(idp.claims()))
    refused(ExternalJWTVerifier(settings(server)), RSA.sign(idp.claims(), alg="PS256"))


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_weak_rsa_key_is_not_used(server: LiveServer, state: idp.JwksState) -> None:
    weak = idp.rsa_key("weak", bits=1024)
    state.keys = [weak.jwk()]
    refused(ExternalJWTVerifier(settings(server)), weak.sign(idp.claims()))


def test_tampered_tokens_are_refused(verifier: ExternalJWTVerifier) -> None:
    token = RSA.sign(idp.claims(sub="alice"))
    refused(verifier, idp.tamper_payload(token, sub="mallory"))
    refused(ExternalJWTVerifier(verifier.settings), idp.tamper_signature(token))
    refused(ExternalJWTVerifier(verifier.settings), idp.tamper_signature(EC.sign(idp.claims())))
    refused(ExternalJWTVerifier(verifier.settings), token[:-1])


def test_expired_token_answers_token_expired(verifier: ExternalJWTVerifier) -> None:
    now = int(time.time())
    error = refused(verifier, RSA.sign(idp.claims(iat=now - 3600, exp=now - 120)), code="token_expired")
    assert "expired" in error.message


FUTURE = object()  # resolved when the test runs: collection may be minutes earlier


@pytest.mark.parametrize("changes", [
    {"nbf": FUTURE},
    {"iat": FUTURE},
    {"iss": "https://evil.test/"},
    {"iss": None},
    {"aud": "someone-else"},
    {"aud": None},
    {"exp": None},
    {"sub": None},
    {"sub": ""},
], ids=["nbf-future", "iat-future", "wrong-iss", "no-iss", "wrong-aud", "no-aud", "no-exp", "no-sub", "empty-sub"])
def test_bad_claims_are_refused(verifier: ExternalJWTVerifier, changes: dict[str, Any]) -> None:
    changes = {k: int(time.time()) + 300 if v is FUTURE else v for k, v in changes.items()}
    refused(verifier, RSA.sign(idp.claims(**changes)))


def test_token_without_kid_is_refused(verifier: ExternalJWTVerifier, state: idp.JwksState) -> None:
    token = jwt.encode(idp.claims(), RSA.private, algorithm="RS256")
    refused(verifier, token)
    assert state.fetches == 0  # nor does it make us fetch the JWKS


def test_malformed_tokens_are_refused(verifier: ExternalJWTVerifier) -> None:
    for token in ("a.b.c", "e30.e30.", "!!!.???.***"):
        refused(verifier, token)


# -- the JWKS cache ----------------------------------------------------------


def test_unknown_kid_refetches_at_most_once_per_interval(server: LiveServer, state: idp.JwksState) -> None:
    clock = Clock()
    new, newer = idp.rsa_key("rsa-2"), idp.ec_key("ec-2")

    async def scenario() -> None:
        verifier = ExternalJWTVerifier(settings(server), clock=clock)
        try:
            assert (await verifier.verify(RSA.sign(idp.claims())))["sub"]
            assert state.fetches == 1
            # Cached: no fetch for a known kid.
            await verifier.verify(EC.sign(idp.claims()))
            assert state.fetches == 1

            # A newly published key: its first token refetches and is accepted.
            state.keys.append(new.jwk())
            clock.now += 10
            assert (await verifier.verify(new.sign(idp.claims(sub="bob"))))["sub"] == "bob"
            assert state.fetches == 2

            # Another unknown kid inside 10 s: no refetch, refused.
            state.keys.append(newer.jwk())
            clock.now += 9.5
            with pytest.raises(AuthenticationFailed) as caught:
                await verifier.verify(newer.sign(idp.claims()))
            assert caught.value.code == "invalid_api_key"
            assert state.fetches == 2
            # Made-up kids do not make it refetch either.
            for n in range(5):
                with pytest.raises(AuthenticationFailed):
                    await verifier.verify(RSA.sign(idp.claims(), headers={"kid": f"made-up-{n}"}))
            assert state.fetches == 2

            # 10 s after the last fetch it refetches, and the key works.
            clock.now += 0.5
            assert (await verifier.verify(newer.sign(idp.claims(sub="carol"))))["sub"] == "carol"
            assert state.fetches == 3
        finally:
            await verifier.aclose()

    run(scenario())


def test_concurrent_requests_share_one_fetch(server: LiveServer, state: idp.JwksState) -> None:
    async def scenario() -> None:
        verifier = ExternalJWTVerifier(settings(server))
        try:
            tokens = [RSA.sign(idp.claims(sub=f"user-{n}")) for n in range(20)]
            found = await asyncio.gather(*(verifier.verify(t) for t in tokens))
            assert [c["sub"] for c in found] == [f"user-{n}" for n in range(20)]
            assert state.fetches == 1
        finally:
            await verifier.aclose()

    run(scenario())


def test_cache_expires_so_removed_keys_stop_working(server: LiveServer, state: idp.JwksState) -> None:
    clock = Clock()

    async def scenario() -> None:
        verifier = ExternalJWTVerifier(settings(server), clock=clock, max_age_s=600)
        try:
            await verifier.verify(RSA.sign(idp.claims()))
            state.keys = [EC.jwk()]  # RSA withdrawn
            clock.now += 599
            await verifier.verify(RSA.sign(idp.claims()))  # still cached
            assert state.fetches == 1
            clock.now += 1
            with pytest.raises(AuthenticationFailed):
                await verifier.verify(RSA.sign(idp.claims()))
            assert state.fetches == 2
            await verifier.verify(EC.sign(idp.claims()))
            assert state.fetches == 2
        finally:
            await verifier.aclose()

    run(scenario())


@pytest.mark.parametrize("failure", ["down", "500", "not-json", "not-a-jwks", "keys-not-a-list"])
def test_jwks_unavailable_without_a_cache_is_503(server: LiveServer, state: idp.JwksState, failure: str) -> None:
    url = server.url + idp.JWKS_PATH
    if failure == "down":
        url = "http://127.0.0.1:9" + idp.JWKS_PATH
    elif failure == "500":
        state.status = 500
    else:
        state.body = {"not-json": b"<html>oops</html>", "not-a-jwks": b'["keys"]',
                      "keys-not-a-list": b'{"keys": {"kid": "x"}}'}[failure]
    verifier = ExternalJWTVerifier(settings(server, jwks_url=url))
    with pytest.raises(IdentityProviderUnavailable) as caught:
        verify(verifier, RSA.sign(idp.claims()))
    assert caught.value.status_code == 503
    assert caught.value.code == "jwks_unavailable"


def test_jwks_outage_keeps_the_cached_keys(server: LiveServer, state: idp.JwksState) -> None:
    clock = Clock()

    async def scenario() -> None:
        verifier = ExternalJWTVerifier(settings(server), clock=clock)
        try:
            await verifier.verify(RSA.sign(idp.claims()))
            state.status = 503
            clock.now += 3600  # the cache is stale, the refresh fails: the old keys still serve
            assert (await verifier.verify(RSA.sign(idp.claims(sub="still"))))["sub"] == "still"
            assert state.fetches == 2
            with pytest.raises(AuthenticationFailed):  # an unknown kid during the outage: 401, not 500
                await verifier.verify(idp.rsa_key("rsa-9").sign(idp.claims()))
            state.status, state.body = 200, b"garbage"
            clock.now += 10
            assert (await verifier.verify(RSA.sign(idp.claims(sub="again"))))["sub"] == "again"
            assert state.fetches == 3
        finally:
            await verifier.aclose()

    run(scenario())


def test_a_jwks_with_junk_entries_keeps_the_good_keys() -> None:
    body = json.dumps({"keys": [
        "junk", {"kty": "RSA"}, {"kty": "RSA", "kid": "bad", "n": "AA", "e": "AQAB"},
        {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"}, RSA.jwk(use="enc") | {"kid": "enc"},
        RSA.jwk(alg="HS256") | {"kid": "hs"}, {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AA"},
        RSA.jwk(), EC.jwk(),
    ]}).encode()
    assert sorted(parse_jwks(body)) == ["ec-1", "rsa-1"]


# -- users -------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with database(request.param, tmp_path) as url:
        db = Database(url)

        async def upgrade() -> None:
            await migrate.upgrade(db)
            await db.engine.dispose()

        asyncio.run(upgrade())
        yield db
        asyncio.run(db.engine.dispose())


def principal_of(verifier: ExternalJWTVerifier, db: Database, claims: dict[str, Any]) -> Any:
    async def main() -> Any:
        try:
            return await verifier.principal(claims, db)
        finally:
            await db.engine.dispose()  # engines are bound to one event loop

    return asyncio.run(main())


def test_new_identity_gets_an_account_with_its_email(server: LiveServer, db: Database) -> None:
    verifier = ExternalJWTVerifier(settings(server))
    first = principal_of(verifier, db, idp.claims(sub="new-1", email="New.Person@Example.com"))
    assert first.kind == "user" and first.role == "user" and first.email == "New.Person@Example.com"
    again = principal_of(verifier, db, idp.claims(sub="new-1", email="changed@example.com"))
    assert again.user_id == first.user_id


def test_unknown_identity_without_auto_create_is_refused(server: LiveServer, db: Database) -> None:
    verifier = ExternalJWTVerifier(settings(server, auto_create_users=False))
    with pytest.raises(AuthenticationFailed):
        principal_of(verifier, db, idp.claims(sub="nobody"))


def test_missing_email_is_refused(server: LiveServer, db: Database) -> None:
    verifier = ExternalJWTVerifier(settings(server))
    for email in (None, "", "not-an-email", 42):
        with pytest.raises(AuthenticationFailed):
            principal_of(verifier, db, idp.claims(sub="no-email", email=email))


def test_existing_email_links_only_when_verified(server: LiveServer, db: Database) -> None:
    async def local() -> str:
        async with db.session() as session:
            user = await user_repo.create_user(session, email="local@example.com")
        await db.engine.dispose()
        return user.id

    local_id = asyncio.run(local())
    verifier = ExternalJWTVerifier(settings(server))
    for verified in (None, False, "true"):
        with pytest.raises(AuthenticationFailed):
            principal_of(verifier, db, idp.claims(sub="claimer", email="LOCAL@example.com", email_verified=verified))
    linked = principal_of(verifier, db, idp.claims(sub="owner", email="local@example.com", email_verified=True))
    assert linked.user_id == local_id
    # Linked now: another identity with the same verified email cannot take it over.
    with pytest.raises(AuthenticationFailed):
        principal_of(verifier, db, idp.claims(sub="other", email="local@example.com", email_verified=True))


def test_disabled_user_is_refused(server: LiveServer, db: Database) -> None:
    verifier = ExternalJWTVerifier(settings(server))
    found = principal_of(verifier, db, idp.claims(sub="to-disable"))

    async def disable() -> None:
        async with db.session() as session:
            user = await user_repo.get_user(session, found.user_id)
            assert user is not None
            await user_repo.update_user(session, user, {"is_active": False})
        await db.engine.dispose()

    asyncio.run(disable())
    with pytest.raises(AuthenticationFailed):
        principal_of(verifier, db, idp.claims(sub="to-disable"))


def test_concurrent_first_requests_make_one_account(server: LiveServer, db: Database) -> None:
    verifier = ExternalJWTVerifier(settings(server))

    async def main() -> list[Any]:
        try:
            return await asyncio.gather(*(
                verifier.principal(idp.claims(sub="racer", email="racer@example.com"), db) for _ in range(8)
            ))
        finally:
            await db.engine.dispose()

    found = asyncio.run(main())
    assert len({p.user_id for p in found}) == 1
