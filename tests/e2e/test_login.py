"""Sign-in with email and password, refresh-token rotation and reuse
detection, throttling — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jwt
import openai
import pytest

from llm_gateway.auth.passwords import hash_password
from llm_gateway.db import users as user_repo
from llm_gateway.db.engine import Database
from tests.conftest import Stack, running_stack
from tests.databases import database

SECRET = "test-jwt-secret-that-is-long-enough-0123456789"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def auth_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("login")
    extra = {"auth": {"jwt_secret": SECRET, "access_ttl_s": 900, "allow_signup": True}}
    with database(request.param, folder) as url, running_stack(folder, url, extra) as stack:
        stack.database_url = url
        yield stack


def make_user(stack: Stack, email: str, password: str, **fields: Any) -> str:
    async def run() -> str:
        db = Database(stack.database_url)
        try:
            async with db.session() as session:
                user = await user_repo.create_user(session, email=email, password_hash=await hash_password(password))
                if fields:
                    await user_repo.update_user(session, user, fields)
                return user.id
        finally:
            await db.aclose()

    return asyncio.run(run())


def login(stack: Stack, email: str, password: str) -> httpx.Response:
    return httpx.post(f"{stack.url}/auth/login", json={"email": email, "password": password}, timeout=10)


def test_login_and_use_access_token(auth_stack: Stack) -> None:
    make_user(auth_stack, "Alice@Example.com", "correct horse battery")
    resp = login(auth_stack, "alice@example.COM", "correct horse battery")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    claims = jwt.decode(body["access_token"], SECRET.encode(), algorithms=["HS256"], issuer="llm-gateway")
    assert claims["role"] == "user" and claims["exp"] > time.time()
    client = openai.OpenAI(base_url=f"{auth_stack.url}/v1", api_key=body["access_token"], max_retries=0)
    reply = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Mock reply: hi"
    assert "mock" in [m.id for m in client.models.list()]


@pytest.mark.parametrize(("email", "password"), [
    ("bob@example.com", "wrong password"), ("nobody@example.com", "whatever pass"),
])
def test_bad_credentials(auth_stack: Stack, email: str, password: str) -> None:
    make_user(auth_stack, "bob@example.com", "bobs password") if email.startswith("bob") else None
    resp = login(auth_stack, email, password)
    assert resp.status_code == 401
    assert resp.json()["error"]["type"] == "authentication_error"
    assert resp.json()["error"]["message"] == "Incorrect email or password."


def test_login_validation(auth_stack: Stack) -> None:
    resp = httpx.post(f"{auth_stack.url}/auth/login", json={"email": "x@y.z"}, timeout=10)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "password"
    resp = httpx.post(f"{auth_stack.url}/auth/login", content=b"{nope", timeout=10,
                      headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"


def test_refresh_rotates_and_reuse_revokes_family(auth_stack: Stack) -> None:
    make_user(auth_stack, "carol@example.com", "carols password")
    first = login(auth_stack, "carol@example.com", "carols password").json()
    url = f"{auth_stack.url}/auth/refresh"
    second = httpx.post(url, json={"refresh_token": first["refresh_token"]}, timeout=10)
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"] and rotated["access_token"]
    # Replaying the spent token is refused and revokes the family...
    replay = httpx.post(url, json={"refresh_token": first["refresh_token"]}, timeout=10)
    assert replay.status_code == 401 and replay.json()["error"]["type"] == "authentication_error"
    # ...so the legitimately rotated token no longer works either.
    after = httpx.post(url, json={"refresh_token": rotated["refresh_token"]}, timeout=10)
    assert after.status_code == 401
    assert httpx.post(url, json={"refresh_token": "rt-made-up"}, timeout=10).status_code == 401


def test_concurrent_refresh_only_one_wins(auth_stack: Stack) -> None:
    make_user(auth_stack, "dave@example.com", "daves password")
    token = login(auth_stack, "dave@example.com", "daves password").json()["refresh_token"]

    def use(_: int) -> int:
        return httpx.post(f"{auth_stack.url}/auth/refresh", json={"refresh_token": token}, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(use, range(8)))
    assert codes.count(200) == 1 and codes.count(401) == 7


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_bad_tokens_are_refused(auth_stack: Stack) -> None:
    user_id = make_user(auth_stack, "erin@example.com", "erins password")
    now = int(time.time())
    claims = {"sub": user_id, "role": "admin", "typ": "access", "iss": "llm-gateway", "iat": now, "exp": now + 60}
    good = jwt.encode(claims, SECRET.encode(), algorithm="HS256")
    header, _payload, signature = good.split(".")
    tampered = ".".join([header, _b64({**claims, "sub": "user_someone_else"}), signature])
    cases = {
        "alg none": _b64({"alg": "none", "typ": "JWT"}) + "." + _b64(claims) + ".",
        "tampered": tampered,
        "wrong secret": jwt.encode(claims, b"another secret entirely, long enough", algorithm="HS256"),
        "expired": jwt.encode({**claims, "iat": now - 100, "exp": now - 10}, SECRET.encode(), algorithm="HS256"),
        "not yet valid": jwt.encode({**claims, "nbf": now + 3600}, SECRET.encode(), algorithm="HS256"),
        "refresh as access": jwt.encode({**claims, "typ": "refresh"}, SECRET.encode(), algorithm="HS256"),
        "unknown user": jwt.encode({**claims, "sub": "user_nope"}, SECRET.encode(), algorithm="HS256"),
        "garbage": "a.b.c",
    }
    for name, token in cases.items():
        resp = httpx.get(f"{auth_stack.url}/v1/models", headers={"authorization": f"Bearer {token}"}, timeout=10)
        assert resp.status_code == 401, name
        assert resp.json()["error"]["type"] == "authentication_error", name
        expected = "token_expired" if name == "expired" else "invalid_api_key"
        assert resp.json()["error"]["code"] == expected, name
    ok = httpx.get(f"{auth_stack.url}/v1/models", headers={"authorization": f"Bearer {good}"}, timeout=10)
    assert ok.status_code == 200
    # The role claim is not trusted: the user is an ordinary user in the database.
    admin = httpx.get(f"{auth_stack.url}/admin/users", headers={"authorization": f"Bearer {good}"}, timeout=10)
    assert admin.status_code in (403, 404)


def test_disabled_user_token_refused_within_a_second(auth_stack: Stack) -> None:
    make_user(auth_stack, "frank@example.com", "franks password")
    token = login(auth_stack, "frank@example.com", "franks password").json()["access_token"]
    headers = {"authorization": f"Bearer {token}"}
    assert httpx.get(f"{auth_stack.url}/v1/models", headers=headers, timeout=10).status_code == 200

    async def disable() -> None:
        db = Database(auth_stack.database_url)
        try:
            async with db.session() as session:
                user = await user_repo.get_by_email(session, "frank@example.com")
                assert user is not None
                await user_repo.update_user(session, user, {"is_active": False})
        finally:
            await db.aclose()

    asyncio.run(disable())  # straight to the database: no broadcast, only the cache TTL
    time.sleep(1.1)
    assert httpx.get(f"{auth_stack.url}/v1/models", headers=headers, timeout=10).status_code == 401
    assert login(auth_stack, "frank@example.com", "franks password").status_code == 401


def test_login_throttled_after_repeated_failures(auth_stack: Stack) -> None:
    make_user(auth_stack, "grace@example.com", "graces password")
    for _ in range(5):
        assert login(auth_stack, "grace@example.com", "bad guess!").status_code == 401
    resp = login(auth_stack, "grace@example.com", "graces password")
    assert resp.status_code == 429
    assert resp.json()["error"]["type"] == "rate_limit_error"
    assert int(resp.headers["retry-after"]) >= 1


def test_signup_when_allowed(auth_stack: Stack) -> None:
    resp = httpx.post(f"{auth_stack.url}/auth/signup", json={"email": "Heidi@example.com", "password": "heidis pw!"},
                      timeout=10)
    assert resp.status_code == 201, resp.text
    assert login(auth_stack, "heidi@example.com", "heidis pw!").status_code == 200
    again = httpx.post(f"{auth_stack.url}/auth/signup", json={"email": "HEIDI@example.com", "password": "x" * 9},
                       timeout=10)
    assert again.status_code == 409 and set(again.json()) == {"error"}
