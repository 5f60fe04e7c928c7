"""The admin API through HTTP, on SQLite and PostgreSQL: users and keys,
paging, permissions, keys used at once with the ``openai`` SDK, revocation,
disabled users, allowed models, expiry, hostile input and concurrency."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest

from llm_gateway import accounts
from tests.conftest import AUTH, Stack

USER_FIELDS = {"id", "object", "email", "role", "is_active", "rpm", "tpm", "allowed_models", "balance_usd",
               "created_at", "updated_at"}
KEY_FIELDS = {"id", "object", "name", "prefix", "user_id", "allowed_models", "rpm", "tpm", "budget_usd",
              "budget_period", "budget_key_id", "expires_at", "revoked_at", "last_used_at", "created_at"}
HI = [{"role": "user", "content": "hi"}]


def unique_email(tag: str = "u") -> str:
    return f"{tag}-{time.time_ns()}@example.com"


def call(stack: Stack, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
         params: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.request(method, f"{stack.url}{path}", json=body, params=params, timeout=20,
                         headers=AUTH if headers is None else headers)


def bearer(credential: str) -> dict[str, str]:
    return {"authorization": f"Bearer {credential}"}


def assert_error(resp: httpx.Response, status: int, code: str | None = None, type_: str | None = None) -> None:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code, err
    if type_ is not None:
        assert err["type"] == type_, err
    assert "Traceback" not in resp.text


def new_user(stack: Stack, **fields: Any) -> dict[str, Any]:
    resp = call(stack, "POST", "/admin/users", {"email": unique_email(), **fields})
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def new_key(stack: Stack, user_id: str, **fields: Any) -> dict[str, Any]:
    resp = call(stack, "POST", f"/admin/users/{user_id}/keys", {"name": "test key", **fields})
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def chat(stack: Stack, key: str, model: str = "mock") -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/chat/completions", json={"model": model, "messages": HI},
                      headers=bearer(key), timeout=20)


# ---------------------------------------------------------------- users


def test_create_get_and_patch_user(db_stack: Stack) -> None:
    email = unique_email("Mixed.Case")
    resp = call(db_stack, "POST", "/admin/users", {
        "email": email, "password": "correct horse battery", "role": "admin", "rpm": 10, "tpm": 1000,
        "allowed_models": ["mock", "gpt-test"]})
    assert resp.status_code == 201, resp.text
    user = resp.json()
    assert set(user) == USER_FIELDS
    assert user["object"] == "user" and user["email"] == email and user["role"] == "admin"
    assert user["is_active"] is True and user["rpm"] == 10 and user["tpm"] == 1000
    assert user["allowed_models"] == ["mock", "gpt-test"] and user["balance_usd"] == "0.000000"
    assert user["created_at"].endswith(("Z", "+00:00"))
    assert "password" not in resp.text and "argon2" not in resp.text

    got = call(db_stack, "GET", f"/admin/users/{user['id']}")
    assert got.status_code == 200 and got.json() == user

    time.sleep(0.01)
    patched = call(db_stack, "PATCH", f"/admin/users/{user['id']}", {
        "rpm": None, "tpm": 5, "allowed_models": None, "role": "user", "email": "new-" + email,
        "password": "another long password"})
    assert patched.status_code == 200, patched.text
    after = patched.json()
    assert after["rpm"] is None and after["tpm"] == 5 and after["allowed_models"] is None
    assert after["role"] == "user" and after["email"] == "new-" + email
    assert after["updated_at"] > user["updated_at"] and after["created_at"] == user["created_at"]
    assert call(db_stack, "GET", f"/admin/users/{user['id']}").json() == after

    # Only what is sent changes.
    again = call(db_stack, "PATCH", f"/admin/users/{user['id']}", {"rpm": 7}).json()
    assert again["rpm"] == 7 and again["tpm"] == 5 and again["email"] == "new-" + email


def test_password_set_by_admin_signs_in(db_stack: Stack) -> None:
    email = unique_email("login")
    new_user(db_stack, email=email, password="a fine password")
    ok = httpx.post(f"{db_stack.url}/auth/login", json={"email": email, "password": "a fine password"}, timeout=20)
    assert ok.status_code == 200, ok.text
    me = httpx.get(f"{db_stack.url}/me", headers=bearer(ok.json()["access_token"]), timeout=20)
    assert me.status_code == 200 and me.json()["email"] == email


def test_duplicate_email_in_any_case_is_409(db_stack: Stack) -> None:
    email = unique_email("Dup")
    new_user(db_stack, email=email)
    for variant in (email, email.upper(), email.lower(), f"  {email.swapcase()} "):
        assert_error(call(db_stack, "POST", "/admin/users", {"email": variant}), 409, "email_taken")
    other = new_user(db_stack)
    assert_error(call(db_stack, "PATCH", f"/admin/users/{other['id']}", {"email": email.upper()}), 409,
                 "email_taken")


@pytest.mark.parametrize(("body", "param"), [
    ({}, "email"),
    ({"email": "no-at-sign"}, "email"),
    ({"email": "two@@example.com"}, "email"),
    ({"email": "with space@example.com"}, "email"),
    ({"email": "x" * 400 + "@example.com"}, "email"),
    ({"email": "nul\u0000@example.com"}, "email"),
    ({"email": 42}, "email"),
    ({"email": "ok@example.com", "password": "short"}, "password"),
    ({"email": "ok@example.com", "password": "p" * 1025}, "password"),
    ({"email": "ok@example.com", "role": "root"}, "role"),
    ({"email": "ok@example.com", "rpm": 0}, "rpm"),
    ({"email": "ok@example.com", "rpm": "5"}, "rpm"),
    ({"email": "ok@example.com", "tpm": 10**12}, "tpm"),
    ({"email": "ok@example.com", "tpm": 1.5}, "tpm"),
    ({"email": "ok@example.com", "allowed_models": [""]}, "allowed_models.0"),
    ({"email": "ok@example.com", "allowed_models": ["m" * 201]}, "allowed_models.0"),
    ({"email": "ok@example.com", "allowed_models": "mock"}, "allowed_models"),
    ({"email": "ok@example.com", "is_admin": True}, "is_admin"),
    ({"email": "ok@example.com", "balance_usd": "1000"}, "balance_usd"),
])
def test_invalid_user_is_400(db_stack: Stack, body: dict[str, Any], param: str) -> None:
    resp = call(db_stack, "POST", "/admin/users", body)
    assert_error(resp, 400, type_="invalid_request_error")
    assert resp.json()["error"]["param"] == param


@pytest.mark.parametrize("body", [
    {"email": None}, {"role": None}, {"is_active": None}, {"is_active": "no"}, {"password": "short"},
    {"unknown": 1}, {"balance_usd": "5"},
])
def test_invalid_patch_is_400(db_stack: Stack, body: dict[str, Any]) -> None:
    user = new_user(db_stack)
    assert_error(call(db_stack, "PATCH", f"/admin/users/{user['id']}", body), 400, type_="invalid_request_error")


def test_paging_newest_first(db_stack: Stack) -> None:
    ours = {new_user(db_stack, email=unique_email(f"page{i}"))["id"] for i in range(25)}
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 10} | ({"after": after} if after else {})
        body = call(db_stack, "GET", "/admin/users", params=params).json()
        assert body["object"] == "list" and set(body) == {"object", "data", "has_more", "last_id"}
        assert len(body["data"]) <= 10
        ids = [u["id"] for u in body["data"]]
        assert body["last_id"] == (ids[-1] if ids else None)
        if pages < 2:
            assert len(ids) == 10 and body["has_more"] is True
            assert set(ids) <= ours  # the 25 newest users are ours
        seen.extend(ids)
        pages += 1
        if not body["has_more"]:
            break
        after = body["last_id"]
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen))
    assert ours <= set(seen)
    assert set(seen[:25]) == ours
    default = call(db_stack, "GET", "/admin/users").json()
    assert [u["id"] for u in default["data"]] == seen[:20]
    assert call(db_stack, "GET", "/admin/users", params={"limit": 100}).json()["data"][0]["id"] == seen[0]
    last = call(db_stack, "GET", "/admin/users", params={"after": seen[-1]}).json()
    assert last == {"object": "list", "data": [], "has_more": False, "last_id": None}


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"limit": -1},
                                    {"after": "x" * 65}, {"after": "bad\u0000id"}])
def test_bad_paging_is_400(db_stack: Stack, params: dict[str, Any]) -> None:
    for path in ("/admin/users", "/admin/keys"):
        assert_error(call(db_stack, "GET", path, params=params), 400, type_="invalid_request_error")


def test_unknown_ids_are_404(db_stack: Stack) -> None:
    for method, path, body in [
        ("GET", "/admin/users/user_nope", None),
        ("PATCH", "/admin/users/user_nope", {"rpm": 1}),
        ("POST", "/admin/users/user_nope/keys", {"name": "k"}),
        ("GET", "/admin/users/user_nope/keys", None),
        ("GET", "/admin/keys/key_nope", None),
        ("DELETE", "/admin/keys/key_nope", None),
        ("GET", "/admin/users/" + "x" * 5000, None),
        ("GET", "/admin/users/a%00b", None),
        ("DELETE", "/admin/keys/%27%20OR%201%3D1--", None),
    ]:
        assert_error(call(db_stack, method, path, body), 404, type_="invalid_request_error")


# ---------------------------------------------------------------- who may


def test_admin_routes_need_admin(db_stack: Stack) -> None:
    user = new_user(db_stack)
    key = new_key(db_stack, user["id"])["key"]
    admin = new_user(db_stack, role="admin")
    admin_key = new_key(db_stack, admin["id"])["key"]
    routes = [("GET", "/admin/users", None), ("POST", "/admin/users", {"email": unique_email()}),
              ("GET", f"/admin/users/{user['id']}", None), ("PATCH", f"/admin/users/{user['id']}", {"rpm": 1}),
              ("POST", f"/admin/users/{user['id']}/keys", {"name": "x"}),
              ("GET", f"/admin/users/{user['id']}/keys", None), ("GET", "/admin/keys", None),
              ("GET", "/admin/keys/key_x", None), ("DELETE", "/admin/keys/key_x", None)]
    for method, path, body in routes:
        assert_error(call(db_stack, method, path, body, headers={}), 401, "invalid_api_key", "authentication_error")
        assert_error(call(db_stack, method, path, body, headers=bearer("gw-" + "x" * 43)), 401,
                     type_="authentication_error")
        assert_error(call(db_stack, method, path, body, headers=bearer(key)), 403, "admin_required",
                     "permission_error")
    # An admin account's key is as good as the master key here.
    assert call(db_stack, "GET", "/admin/users", headers=bearer(admin_key)).status_code == 200
    made = call(db_stack, "POST", f"/admin/users/{user['id']}/keys", {"name": "by admin"},
                headers=bearer(admin_key))
    assert made.status_code == 201
    # Demoting the admin takes effect at once.
    call(db_stack, "PATCH", f"/admin/users/{admin['id']}", {"role": "user"})
    assert_error(call(db_stack, "GET", "/admin/users", headers=bearer(admin_key)), 403, "admin_required")


# ---------------------------------------------------------------- keys


def test_key_works_at_once_and_revocation_is_immediate(db_stack: Stack) -> None:
    user = new_user(db_stack)
    created = new_key(db_stack, user["id"], name="sdk key")
    assert set(created) == KEY_FIELDS | {"key"}
    assert created["object"] == "api_key" and created["user_id"] == user["id"] and created["name"] == "sdk key"
    assert created["key"].startswith(created["prefix"]) and created["key"].startswith("gw-")
    assert len(created["key"]) >= 35 and created["revoked_at"] is None

    client = openai.OpenAI(base_url=f"{db_stack.url}/v1", api_key=created["key"], max_retries=0)
    reply = client.chat.completions.create(model="mock", messages=HI)  # type: ignore[arg-type]
    assert reply.choices[0].message.content

    shown = call(db_stack, "GET", f"/admin/keys/{created['id']}").json()
    assert set(shown) == KEY_FIELDS and created["key"] not in str(shown)
    listed = call(db_stack, "GET", f"/admin/users/{user['id']}/keys").json()
    assert [k["id"] for k in listed["data"]] == [created["id"]] and "key" not in listed["data"][0]
    assert [k["id"] for k in call(db_stack, "GET", "/admin/keys", params={"user_id": user["id"]}).json()["data"]
            ] == [created["id"]]

    revoked = call(db_stack, "DELETE", f"/admin/keys/{created['id']}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None and set(revoked.json()) == KEY_FIELDS
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="mock", messages=HI)  # type: ignore[arg-type]
    again = call(db_stack, "DELETE", f"/admin/keys/{created['id']}")
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]


def test_key_options_round_trip(db_stack: Stack) -> None:
    user = new_user(db_stack)
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    key = new_key(db_stack, user["id"], allowed_models=["mock"], rpm=5, tpm=500, budget_usd="12.5",
                  budget_period="month", expires_at=expires.replace(tzinfo=None).isoformat())
    assert key["allowed_models"] == ["mock"] and key["rpm"] == 5 and key["tpm"] == 500
    assert key["budget_usd"] == "12.500000" and key["budget_period"] == "month"
    assert datetime.fromisoformat(key["expires_at"].replace("Z", "+00:00")) == expires  # naive means UTC
    numeric = new_key(db_stack, user["id"], budget_usd=3, budget_period="day",
                      expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    assert numeric["budget_usd"] == "3.000000"  # a whole JSON number; a fractional one is a float, refused


@pytest.mark.parametrize(("body", "param"), [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "n" * 201}, "name"),
    ({"name": "k", "budget_usd": "10"}, None),
    ({"name": "k", "budget_period": "day"}, None),
    ({"name": "k", "budget_usd": "0", "budget_period": "day"}, "budget_usd"),
    ({"name": "k", "budget_usd": "-1", "budget_period": "day"}, "budget_usd"),
    ({"name": "k", "budget_usd": "lots", "budget_period": "day"}, "budget_usd"),
    ({"name": "k", "budget_usd": "NaN", "budget_period": "day"}, "budget_usd"),
    ({"name": "k", "budget_usd": "1e30", "budget_period": "day"}, "budget_usd"),
    ({"name": "k", "budget_usd": 0.25, "budget_period": "day"}, "budget_usd"),
    ({"name": "k", "budget_usd": "5", "budget_period": "week"}, "budget_period"),
    ({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"name": "k", "expires_at": "next tuesday"}, "expires_at"),
    ({"name": "k", "rpm": -3}, "rpm"),
    ({"name": "k", "allowed_models": [None]}, "allowed_models.0"),
    ({"name": "k", "key": "gw-chosen-by-me-0123456789012345678901"}, "key"),
    ({"name": "k", "user_id": "someone"}, "user_id"),
])
def test_invalid_key_is_400(db_stack: Stack, body: dict[str, Any], param: str | None) -> None:
    user = new_user(db_stack)
    resp = call(db_stack, "POST", f"/admin/users/{user['id']}/keys", body)
    assert_error(resp, 400, type_="invalid_request_error")
    if param is not None:
        assert resp.json()["error"]["param"] == param


def test_disabled_user_keys_are_refused_at_once(db_stack: Stack) -> None:
    user = new_user(db_stack)
    key = new_key(db_stack, user["id"])["key"]
    assert chat(db_stack, key).status_code == 200
    assert call(db_stack, "PATCH", f"/admin/users/{user['id']}", {"is_active": False}).json()["is_active"] is False
    assert_error(chat(db_stack, key), 401, type_="authentication_error")
    assert_error(call(db_stack, "GET", "/me", headers=bearer(key)), 401)
    call(db_stack, "PATCH", f"/admin/users/{user['id']}", {"is_active": True})
    # A cached refusal is not tied to its user, so re-enabling may take the
    # cache's TTL (one second without Redis).
    deadline = time.monotonic() + 2
    while chat(db_stack, key).status_code != 200:
        assert time.monotonic() < deadline, "the re-enabled user's key is still refused"
        time.sleep(0.05)


def test_allowed_models(db_stack: Stack) -> None:
    user = new_user(db_stack, allowed_models=["mock", "gpt-test"])
    key = new_key(db_stack, user["id"], allowed_models=["mock"])["key"]
    assert chat(db_stack, key).status_code == 200
    assert_error(chat(db_stack, key, "gpt-test"), 403, "model_not_allowed", "permission_error")
    assert_error(chat(db_stack, key, "compat-test"), 403, "model_not_allowed")
    models = httpx.get(f"{db_stack.url}/v1/models", headers=bearer(key), timeout=20).json()
    assert [m["id"] for m in models["data"]] == ["mock"]

    wide = new_key(db_stack, user["id"])["key"]  # no key list: the user's applies
    listed = {m["id"] for m in httpx.get(f"{db_stack.url}/v1/models", headers=bearer(wide), timeout=20).json()["data"]}
    assert listed == {"mock", "gpt-test"}
    assert_error(chat(db_stack, wide, "compat-test"), 403, "model_not_allowed")

    # Narrowing the user narrows every key at once.
    call(db_stack, "PATCH", f"/admin/users/{user['id']}", {"allowed_models": ["gpt-test"]})
    assert_error(chat(db_stack, wide), 403, "model_not_allowed")
    call(db_stack, "PATCH", f"/admin/users/{user['id']}", {"allowed_models": None})
    assert chat(db_stack, wide).status_code == 200


def test_expired_key_is_refused(db_stack: Stack) -> None:
    user = new_user(db_stack)
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    key = new_key(db_stack, user["id"], expires_at=expires.isoformat())["key"]
    assert chat(db_stack, key).status_code == 200
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)
    assert_error(chat(db_stack, key), 401, "invalid_api_key", "authentication_error")


def test_admin_keys_listing(db_stack: Stack) -> None:
    a, b = new_user(db_stack), new_user(db_stack)
    a_keys = [new_key(db_stack, a["id"], name=f"a{i}")["id"] for i in range(3)]
    b_key = new_key(db_stack, b["id"])["id"]
    only_a = call(db_stack, "GET", "/admin/keys", params={"user_id": a["id"]}).json()
    assert [k["id"] for k in only_a["data"]] == sorted(a_keys, reverse=True)
    everyone = call(db_stack, "GET", "/admin/keys", params={"limit": 4}).json()
    assert {b_key, *a_keys} == {k["id"] for k in everyone["data"]}
    first = call(db_stack, "GET", f"/admin/users/{a['id']}/keys", params={"limit": 2}).json()
    assert first["has_more"] is True and len(first["data"]) == 2
    rest = call(db_stack, "GET", f"/admin/users/{a['id']}/keys", params={"after": first["last_id"]}).json()
    assert rest["has_more"] is False and [k["id"] for k in first["data"] + rest["data"]] == sorted(
        a_keys, reverse=True)
    assert call(db_stack, "GET", "/admin/keys", params={"user_id": "user_nobody"}).json()["data"] == []
    assert call(db_stack, "GET", "/admin/keys", params={"user_id": "a\u0000b"}).json()["data"] == []


# ---------------------------------------------------------------- hostile input


def test_injection_like_and_unicode_strings_are_stored_verbatim(db_stack: Stack) -> None:
    email = f"robert');DROP_TABLE_users;--{time.time_ns()}@example.com"
    models = ["x' OR '1'='1", "名前/模型", "a" * 200, "\"; DELETE FROM api_keys; --"]
    user = new_user(db_stack, email=email, allowed_models=models)
    assert user["email"] == email and user["allowed_models"] == models
    for name in ["'; DROP TABLE api_keys; --", "🔑 ключ", "n" * 200, "\\x00 not a nul", "<script>alert(1)</script>"]:
        key = new_key(db_stack, user["id"], name=name, allowed_models=models[:2])
        assert key["name"] == name
        assert call(db_stack, "GET", f"/admin/keys/{key['id']}").json()["name"] == name
    found = call(db_stack, "GET", f"/admin/users/{user['id']}").json()
    assert found["email"] == email and found["allowed_models"] == models
    # The tables are still there.
    assert call(db_stack, "GET", "/admin/users").status_code == 200
    assert call(db_stack, "GET", "/admin/keys").status_code == 200


@pytest.mark.parametrize("raw", [b"{", b"[]", b"null", b'"text"', b'{"email": "\\ud800@example.com"}',
                                 b'{"email": "a@example.com", "password": "\\ud800\\udfff\\ud800xxxxx"}'])
def test_malformed_bodies_are_400(db_stack: Stack, raw: bytes) -> None:
    resp = httpx.post(f"{db_stack.url}/admin/users", content=raw, timeout=20,
                      headers={**AUTH, "content-type": "application/json"})
    assert_error(resp, 400, type_="invalid_request_error")


def test_huge_fields_are_400_not_500(db_stack: Stack) -> None:
    user = new_user(db_stack)
    huge = "x" * 60_000  # within the body limit (64 KiB here), far past every field's own bound
    assert_error(call(db_stack, "POST", "/admin/users", {"email": huge + "@example.com"}), 400)
    # Past the body limit: refused before authentication or parsing.
    assert_error(call(db_stack, "POST", "/admin/users", {"email": "x" * 1_000_000}), 413, "request_too_large")
    assert_error(call(db_stack, "POST", "/admin/users", {"email": unique_email(), "password": huge}), 400)
    assert_error(call(db_stack, "POST", f"/admin/users/{user['id']}/keys", {"name": huge}), 400)
    assert_error(call(db_stack, "POST", f"/admin/users/{user['id']}/keys",
                      {"name": "k", "allowed_models": ["m"] * 5000}), 400)
    assert_error(call(db_stack, "PATCH", f"/admin/users/{user['id']}", {"allowed_models": [huge]}), 400)


@pytest.mark.parametrize("path", ["/admin/users", "/auth/login"])
def test_malformed_json_error_names_no_offset(db_stack: Stack, path: str) -> None:
    resp = httpx.post(f"{db_stack.url}{path}", content=b'{"email": "a@example.com",', timeout=20,
                      headers={**AUTH, "content-type": "application/json"})
    assert_error(resp, 400, "invalid_json", "invalid_request_error")
    error = resp.json()["error"]
    assert error["param"] is None
    assert error["message"].startswith("We could not parse the JSON body"), error


def test_numbers_and_money_are_bounded_and_shown_plainly(db_stack: Stack) -> None:
    user = new_user(db_stack)
    for field in ("rpm", "tpm"):
        resp = call(db_stack, "POST", "/admin/users", {"email": unique_email(), field: 1_000_000_001})
        assert_error(resp, 400, "invalid_value")
        assert resp.json()["error"]["param"] == field and "1000000000" in resp.json()["error"]["message"]
        assert_error(call(db_stack, "PATCH", f"/admin/users/{user['id']}", {field: 10**18}), 400, "invalid_value")
        assert new_key(db_stack, user["id"], **{field: 1_000_000_000})[field] == 1_000_000_000
    keys = f"/admin/users/{user['id']}/keys"
    for budget in ["\u0661\u0662", "\uff15", "5e0", "1000000000.5", "1000000001"]:
        resp = call(db_stack, "POST", keys, {"name": "k", "budget_usd": budget, "budget_period": "day"})
        assert_error(resp, 400, "invalid_value")
        assert resp.json()["error"]["param"] == "budget_usd"
        assert "Decimal(" not in resp.text and "Value error" not in resp.text, resp.text
    assert new_key(db_stack, user["id"], budget_usd="1000000000", budget_period="day")["budget_usd"] == \
        "1000000000.000000"


def test_trailing_slashes_never_redirect_to_the_requests_host(db_stack: Stack) -> None:
    paths = ["/admin/users/", "/admin/keys/", "/me/", "/me/keys/", "/admin/usage/"]
    for path in paths:
        resp = httpx.get(f"{db_stack.url}{path}", headers={**AUTH, "host": "evil.example"}, timeout=20,
                         follow_redirects=False)
        assert_error(resp, 404, type_="invalid_request_error")
        assert "location" not in resp.headers and "evil.example" not in resp.text
    assert len(paths) == 5


def test_account_inputs_declare_their_constraints_in_openapi(stack: Stack) -> None:
    schemas = httpx.get(f"{stack.url}/openapi.json", timeout=20).json()["components"]["schemas"]
    emails = [schemas["NewUser"]["properties"]["email"], schemas["LoginRequest"]["properties"]["email"]]
    emails += [b for b in schemas["UserChanges"]["properties"]["email"].get("anyOf", [])
               if b.get("type") == "string"] or [schemas["UserChanges"]["properties"]["email"]]
    for email in emails:
        assert email["pattern"] == accounts.EMAIL_PATTERN and email["maxLength"] == 320 and email["minLength"] == 3
    assert len(emails) == 3
    # Pydantic's own schema carries them, whatever the document adds.
    assert accounts.NewUser.model_json_schema()["properties"]["email"]["pattern"] == accounts.EMAIL_PATTERN


# ---------------------------------------------------------------- concurrency


def test_concurrent_key_creation_and_revocation(db_stack: Stack) -> None:
    user = new_user(db_stack)
    with ThreadPoolExecutor(20) as pool:
        made = list(pool.map(lambda i: call(db_stack, "POST", f"/admin/users/{user['id']}/keys",
                                            {"name": f"parallel {i}"}), range(20)))
    assert [r.status_code for r in made] == [201] * 20, [r.text for r in made if r.status_code != 201]
    assert len({r.json()["key"] for r in made}) == 20 and len({r.json()["id"] for r in made}) == 20
    listed = call(db_stack, "GET", f"/admin/users/{user['id']}/keys", params={"limit": 100}).json()["data"]
    assert len(listed) == 20

    target = made[0].json()
    with ThreadPoolExecutor(10) as pool:
        revoked = list(pool.map(lambda _: call(db_stack, "DELETE", f"/admin/keys/{target['id']}"), range(10)))
    assert [r.status_code for r in revoked] == [200] * 10, [r.text for r in revoked]
    assert len({r.json()["revoked_at"] for r in revoked}) == 1
    assert_error(chat(db_stack, target["key"]), 401)
    assert chat(db_stack, made[1].json()["key"]).status_code == 200
