"""JWTs against a live gateway, on SQLite and PostgreSQL: an identity
provider's RS/ES tokens (``auth.external``, checked against a fake JWKS) and
the gateway's own HS256 tokens, through the official ``openai`` SDK and
``GET /me``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import openai
import pytest

from llm_gateway.db import users as user_repo
from llm_gateway.db.engine import Database
from tests.conftest import AUTH, Stack, running_stack
from tests.databases import database
from tests.fakes import jwks_server as idp
from tests.fakes.server import serve_in_thread

SECRET = "jwt-auth-test-secret-0123456789-abcdefghijklmnop"
RSA = idp.rsa_key("e2e-rsa-1")
EC = idp.ec_key("e2e-ec-1")


class IdpStack:
    def __init__(self, stack: Stack, jwks: idp.JwksState) -> None:
        self.stack = stack
        self.url = stack.url
        self.jwks = jwks


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdpStack]:
    folder = tmp_path_factory.mktemp("jwt")
    app = idp.create_app([RSA.jwk(), EC.jwk()])
    provider = serve_in_thread(app)
    extra = {"auth": {"jwt_secret": SECRET, "external": {
        "jwks_url": provider.url + idp.JWKS_PATH, "issuer": idp.ISSUER, "audience": idp.AUDIENCE,
        "auto_create_users": True,
    }}}
    try:
        with database(request.param, folder) as url, running_stack(folder, url, extra) as stack:
            stack.database_url = url
            yield IdpStack(stack, app.state.jwks)
    finally:
        provider.stop()


def get_me(gw: IdpStack, token: str) -> httpx.Response:
    return httpx.get(f"{gw.url}/me", headers={"authorization": f"Bearer {token}"}, timeout=10)


def chat(gw: IdpStack, token: str) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", headers={"authorization": f"Bearer {token}"},
                      json={"model": "mock", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)


def assert_401(resp: httpx.Response, code: str = "invalid_api_key") -> None:
    assert resp.status_code == 401, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def db_call(gw: IdpStack, action: Any) -> Any:
    async def run() -> Any:
        db = Database(gw.stack.database_url)
        try:
            async with db.session() as session:
                return await action(session)
        finally:
            await db.aclose()

    return asyncio.run(run())


def local_user(gw: IdpStack, email: str, **changes: Any) -> str:
    async def action(session: Any) -> str:
        user = await user_repo.create_user(session, email=email)
        if changes:
            await user_repo.update_user(session, user, changes)
        return user.id

    user_id: str = db_call(gw, action)
    return user_id


def gateway_token(user_id: str, *, secret: str = SECRET, ttl: int = 300, **changes: Any) -> str:
    now = int(time.time())
    claims = {"sub": user_id, "role": "user", "typ": "access", "iss": "llm-gateway", "iat": now,
              "exp": now + ttl} | changes
    return jwt.encode(claims, secret.encode("utf-8"), algorithm="HS256")


# -- an identity provider's tokens ---------------------------------------------


@pytest.mark.parametrize("key", [RSA, EC], ids=["RS256", "ES256"])
def test_idp_token_works_with_the_openai_sdk(gw: IdpStack, key: idp.SigningKey) -> None:
    token = key.sign(idp.claims(sub=f"sdk-{key.alg}", email=f"SDK.{key.alg}@Example.com"))
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=token, max_retries=0)
    completion = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "Hello"}])
    assert completion.choices[0].message.content
    assert [m.id for m in client.models.list()].count("mock") == 1

    me = get_me(gw, token)
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["email"] == f"SDK.{key.alg}@Example.com"
    assert body["role"] == "user" and body["is_active"] is True
    assert get_me(gw, key.sign(idp.claims(sub=f"sdk-{key.alg}", email="other@example.com"))).json()["id"] == body["id"]


def test_rotated_key_is_accepted_within_10_s(gw: IdpStack) -> None:
    assert chat(gw, RSA.sign(idp.claims(sub="rotator"))).status_code == 200
    new = idp.rsa_key(f"e2e-rotated-{time.monotonic_ns()}")
    # Rotation publishes the new key next to the old one (tokens signed with the
    # old key stay valid until they expire).
    gw.jwks.keys = [new.jwk(), RSA.jwk(), EC.jwk()]
    published = time.monotonic()
    fetches = gw.jwks.fetches
    while True:
        resp = chat(gw, new.sign(idp.claims(sub="rotator")))
        if resp.status_code == 200:
            break
        assert_401(resp)
        assert time.monotonic() - published < 11, "the new key was not accepted within 10 s"
        time.sleep(0.25)
    # However often it was polled, the unknown kid cost the provider one fetch.
    assert gw.jwks.fetches - fetches == 1
    assert chat(gw, RSA.sign(idp.claims(sub="rotator"))).status_code == 200


def test_bad_idp_tokens_are_401(gw: IdpStack) -> None:
    now = int(time.time())
    good = RSA.sign(idp.claims(sub="victim"))
    assert chat(gw, good).status_code == 200
    stranger = idp.rsa_key(RSA.kid)  # same kid, a key the provider never published
    cases = {
        "alg none": idp.unsigned_token(idp.claims(sub="victim"), kid=RSA.kid),
        "HS256 with the public key": idp.hmac_token(idp.claims(sub="victim"), RSA.public_pem(), kid=RSA.kid),
        "tampered payload": idp.tamper_payload(good, sub="someone-else"),
        "tampered signature": idp.tamper_signature(good),
        "foreign key": stranger.sign(idp.claims(sub="victim")),
        "wrong issuer": RSA.sign(idp.claims(iss="https://evil.test/")),
        "wrong audience": RSA.sign(idp.claims(aud="someone-else")),
        "no exp": RSA.sign(idp.claims(exp=None)),
        "not yet valid": RSA.sign(idp.claims(nbf=now + 600)),
    }
    for name, token in cases.items():
        for resp in (chat(gw, token), get_me(gw, token)):
            assert resp.status_code == 401, f"{name}: {resp.text}"
            assert_401(resp)
    expired = RSA.sign(idp.claims(sub="victim", iat=now - 3600, exp=now - 600))
    assert_401(chat(gw, expired), "token_expired")
    assert_401(get_me(gw, expired), "token_expired")


def test_idp_token_for_a_disabled_user_is_401(gw: IdpStack) -> None:
    token = RSA.sign(idp.claims(sub="to-disable", email="to-disable@example.com"))
    user_id = get_me(gw, token).json()["id"]
    resp = httpx.patch(f"{gw.url}/admin/users/{user_id}", headers=AUTH, json={"is_active": False}, timeout=10)
    assert resp.status_code == 200, resp.text
    deadline = time.monotonic() + 5  # a principal may be cached for a moment on another worker
    while chat(gw, token).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert_401(chat(gw, token))


def test_idp_email_of_a_local_user_links_only_when_verified(gw: IdpStack) -> None:
    local_id = local_user(gw, "local.owner@example.com")
    unverified = RSA.sign(idp.claims(sub="squatter", email="local.owner@example.com", email_verified=False))
    assert_401(chat(gw, unverified))
    verified = RSA.sign(idp.claims(sub="owner", email="local.owner@example.com", email_verified=True))
    assert get_me(gw, verified).json()["id"] == local_id


def test_idp_email_is_checked_like_the_admin_apis(gw: IdpStack) -> None:
    """An identity provider's email claim is refused where the admin API would
    refuse it (NUL, spaces, two "@", too long): 401, and no account is made."""
    emails = ["nul\u0000@example.com", "with space@example.com", "two@@example.com", "ctrl\u0007@example.com",
              "x" * 400 + "@example.com", "no-at-sign", "@example.com"]
    for i, email in enumerate(emails):
        sub = f"bad-email-{i}-{time.time_ns()}"
        token = RSA.sign(idp.claims(sub=sub, email=email))
        for resp in (get_me(gw, token), chat(gw, token)):
            assert_401(resp)
            assert "email" in resp.json()["error"]["message"]
        created = db_call(gw, lambda s, sub=sub: user_repo.get_by_external_subject(s, f"{idp.ISSUER}|{sub}"))
        assert created is None, email
    assert len(emails) == 7
    # A subject the database cannot store is refused too, not a 500 or a 503.
    assert_401(get_me(gw, RSA.sign(idp.claims(sub="nul\u0000sub", email="nulsub@example.com"))))
    assert_401(get_me(gw, RSA.sign(idp.claims(sub="s" * 600, email="longsub@example.com"))))


# -- the gateway's own tokens ----------------------------------------------------


def test_gateway_token_works_on_v1_and_me(gw: IdpStack) -> None:
    user_id = local_user(gw, "hs256.user@example.com")
    token = gateway_token(user_id)
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=token, max_retries=0)
    completion = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "Hello"}])
    assert completion.choices[0].message.content
    me = get_me(gw, token)
    assert me.status_code == 200, me.text
    assert me.json()["id"] == user_id and me.json()["email"] == "hs256.user@example.com"


def test_bad_gateway_tokens_are_401(gw: IdpStack) -> None:
    user_id = local_user(gw, "hs256.bad@example.com")
    disabled_id = local_user(gw, "hs256.disabled@example.com", is_active=False)
    assert_401(chat(gw, gateway_token(user_id, ttl=-120)), "token_expired")
    assert_401(get_me(gw, gateway_token(user_id, ttl=-120)), "token_expired")
    cases = {
        "wrong secret": gateway_token(user_id, secret="not-the-gateway-secret-0123456789"),
        "unknown user": gateway_token("user_doesnotexist"),
        "disabled user": gateway_token(disabled_id),
        "refresh type": gateway_token(user_id, typ="refresh"),
        "wrong issuer": gateway_token(user_id, iss="someone"),
        "tampered": idp.tamper_payload(gateway_token(user_id), role="admin", sub=disabled_id),
    }
    for name, token in cases.items():
        for resp in (chat(gw, token), get_me(gw, token)):
            assert resp.status_code == 401, f"{name}: {resp.text}"
            assert_401(resp)


def test_hs256_signed_with_the_idp_public_key_is_not_a_gateway_token(gw: IdpStack) -> None:
    user_id = local_user(gw, "confused@example.com")
    forged = idp.hmac_token(
        {"sub": user_id, "role": "user", "typ": "access", "iss": "llm-gateway", "iat": int(time.time()),
         "exp": int(time.time()) + 300},
        RSA.public_pem(), kid=RSA.kid,
    )
    assert_401(chat(gw, forged))
