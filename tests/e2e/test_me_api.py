"""Self-service through HTTP, on SQLite and PostgreSQL: ``GET /me`` and
``/me/keys`` with a key or a JWT; other users' keys are invisible (404);
no way to widen one's own models or change one's account."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Stack
from tests.e2e.test_admin_api import (
    HI,
    KEY_FIELDS,
    USER_FIELDS,
    assert_error,
    bearer,
    call,
    chat,
    new_key,
    new_user,
    unique_email,
)


def user_with_key(stack: Stack, **user_fields: Any) -> tuple[dict[str, Any], str]:
    user = new_user(stack, **user_fields)
    return user, new_key(stack, user["id"])["key"]


def test_me_answers_the_callers_user(db_stack: Stack) -> None:
    user, key = user_with_key(db_stack, rpm=30, allowed_models=["mock"])
    me = call(db_stack, "GET", "/me", headers=bearer(key))
    assert me.status_code == 200, me.text
    assert set(me.json()) == USER_FIELDS
    assert me.json() == call(db_stack, "GET", f"/admin/users/{user['id']}").json()
    assert me.json()["balance_usd"] == "0.000000"


def test_me_with_master_key_is_404(db_stack: Stack) -> None:
    resp = call(db_stack, "GET", "/me")
    assert_error(resp, 404, type_="invalid_request_error")
    assert "master key" in resp.json()["error"]["message"]
    assert_error(call(db_stack, "GET", "/me/keys"), 404)
    assert_error(call(db_stack, "POST", "/me/keys", {"name": "k"}), 404)


def test_me_needs_a_credential(db_stack: Stack) -> None:
    for method, path, body in [("GET", "/me", None), ("GET", "/me/keys", None), ("POST", "/me/keys", {"name": "k"}),
                               ("DELETE", "/me/keys/key_x", None), ("GET", "/me/keys/key_x", None)]:
        assert_error(call(db_stack, method, path, body, headers={}), 401, "invalid_api_key", "authentication_error")
        assert_error(call(db_stack, method, path, body, headers=bearer("gw-wrong-wrong-wrong-wrong-wrong-wrong-1")),
                     401)


def test_my_keys_lifecycle(db_stack: Stack) -> None:
    user, key = user_with_key(db_stack)
    made = call(db_stack, "POST", "/me/keys", {"name": "laptop", "rpm": 20, "budget_usd": "3",
                                               "budget_period": "day"}, headers=bearer(key))
    assert made.status_code == 201, made.text
    created = made.json()
    assert set(created) == KEY_FIELDS | {"key"}
    assert created["user_id"] == user["id"] and created["key"].startswith(created["prefix"])
    assert created["budget_usd"] == "3.000000" and created["rpm"] == 20

    client = openai.OpenAI(base_url=f"{db_stack.url}/v1", api_key=created["key"], max_retries=0)
    assert client.chat.completions.create(model="mock", messages=HI).choices  # type: ignore[arg-type]

    listed = call(db_stack, "GET", "/me/keys", headers=bearer(created["key"])).json()
    assert listed["object"] == "list" and listed["has_more"] is False
    assert listed["data"][0]["id"] == created["id"] and len(listed["data"]) == 2
    assert all("key" not in k and set(k) == KEY_FIELDS for k in listed["data"])
    paged = call(db_stack, "GET", "/me/keys", params={"limit": 1}, headers=bearer(key)).json()
    assert paged["has_more"] is True and paged["last_id"] == created["id"]
    assert call(db_stack, "GET", f"/me/keys/{created['id']}", headers=bearer(key)).json()["id"] == created["id"]

    revoked = call(db_stack, "DELETE", f"/me/keys/{created['id']}", headers=bearer(key))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="mock", messages=HI)  # type: ignore[arg-type]
    again = call(db_stack, "DELETE", f"/me/keys/{created['id']}", headers=bearer(key))
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]


def test_revoking_the_key_in_use(db_stack: Stack) -> None:
    _, key = user_with_key(db_stack)
    own_id = call(db_stack, "GET", "/me/keys", headers=bearer(key)).json()["data"][0]["id"]
    assert call(db_stack, "DELETE", f"/me/keys/{own_id}", headers=bearer(key)).status_code == 200
    assert_error(call(db_stack, "GET", "/me", headers=bearer(key)), 401)


def test_other_users_keys_are_404(db_stack: Stack) -> None:
    _, mine = user_with_key(db_stack)
    other = new_user(db_stack)
    theirs = new_key(db_stack, other["id"], name="their secret name")
    for method in ("GET", "DELETE"):
        resp = call(db_stack, method, f"/me/keys/{theirs['id']}", headers=bearer(mine))
        assert_error(resp, 404, type_="invalid_request_error")
        assert "their secret name" not in resp.text and other["id"] not in resp.text
        assert_error(call(db_stack, method, "/me/keys/key_unknown", headers=bearer(mine)), 404)
        assert_error(call(db_stack, method, "/me/keys/%00", headers=bearer(mine)), 404)
    assert call(db_stack, "GET", f"/admin/keys/{theirs['id']}").json()["revoked_at"] is None
    assert chat(db_stack, theirs["key"]).status_code == 200
    assert theirs["id"] not in call(db_stack, "GET", "/me/keys", headers=bearer(mine)).text


def test_no_escalation(db_stack: Stack) -> None:
    user, key = user_with_key(db_stack, allowed_models=["mock", "gpt-test"], rpm=10)
    for body in ({"name": "k", "allowed_models": ["compat-test"]}, {"name": "k", "allowed_models": ["mock", "x"]}):
        assert_error(call(db_stack, "POST", "/me/keys", body, headers=bearer(key)), 403, "model_not_allowed",
                     "permission_error")
    narrow = call(db_stack, "POST", "/me/keys", {"name": "n", "allowed_models": ["mock"]}, headers=bearer(key))
    assert narrow.status_code == 201 and narrow.json()["allowed_models"] == ["mock"]
    narrow_key = narrow.json()["key"]
    # A narrow key cannot mint a wider one, with or without a list.
    assert_error(call(db_stack, "POST", "/me/keys", {"name": "w", "allowed_models": ["gpt-test"]},
                      headers=bearer(narrow_key)), 403, "model_not_allowed")
    inherited = call(db_stack, "POST", "/me/keys", {"name": "i"}, headers=bearer(narrow_key)).json()
    assert inherited["allowed_models"] == ["mock"]
    assert_error(chat(db_stack, inherited["key"], "gpt-test"), 403, "model_not_allowed")
    # Account fields are not part of a key, and /me cannot be changed.
    bodies: list[dict[str, Any]] = [{"name": "k", "role": "admin"}, {"name": "k", "user_id": "user_other"},
                                    {"name": "k", "is_admin": 1}]
    for body in bodies:
        assert_error(call(db_stack, "POST", "/me/keys", body, headers=bearer(key)), 400)
    for method in ("PATCH", "PUT", "POST", "DELETE"):
        resp = call(db_stack, method, "/me", {"role": "admin", "rpm": None}, headers=bearer(key))
        assert resp.status_code in (404, 405), resp.text
    assert_error(call(db_stack, "POST", "/admin/users", {"email": unique_email()}, headers=bearer(key)), 403,
                 "admin_required")
    after = call(db_stack, "GET", f"/admin/users/{user['id']}").json()
    assert after["role"] == "user" and after["rpm"] == 10 and after["allowed_models"] == ["mock", "gpt-test"]


def test_a_key_made_by_a_key_inherits_its_restrictions(db_stack: Stack) -> None:
    """Rpm, tpm, expiry and models pass from the calling key to the key it
    makes: left out, they are inherited; narrower is fine; wider is a 403
    naming the field. The budget is shared, not copied (budget_key_id); a
    budget of the key's own may only be narrower."""
    user = new_user(db_stack)
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    parent = new_key(db_stack, user["id"], rpm=10, tpm=1000, budget_usd="5", budget_period="day",
                     expires_at=expires.isoformat(), allowed_models=["mock", "gpt-test"])

    def mint(body: dict[str, Any]) -> httpx.Response:
        return call(db_stack, "POST", "/me/keys", {"name": "child"} | body, headers=bearer(parent["key"]))

    child = mint({})
    assert child.status_code == 201, child.text
    inherited = {f: child.json()[f] for f in ("rpm", "tpm", "expires_at", "allowed_models")}
    assert inherited == {f: parent[f] for f in inherited}
    assert datetime.fromisoformat(child.json()["expires_at"]) == expires
    assert (child.json()["budget_usd"], child.json()["budget_period"]) == (None, None)
    assert child.json()["budget_key_id"] == parent["id"] and parent["budget_key_id"] is None

    later = (expires + timedelta(seconds=1)).isoformat()
    wider: list[tuple[dict[str, Any], str]] = [
        ({"rpm": 11}, "rpm"), ({"tpm": 1001}, "tpm"), ({"budget_usd": "5.000000001", "budget_period": "day"},
                                                      "budget_usd"),
        ({"budget_usd": "1", "budget_period": "month"}, "budget_period"), ({"expires_at": later}, "expires_at"),
    ]
    for body, param in wider:
        resp = mint(body)
        assert_error(resp, 403, "exceeds_calling_key", "permission_error")
        assert resp.json()["error"]["param"] == param, resp.text
    assert_error(mint({"allowed_models": ["compat-test"]}), 403, "model_not_allowed")
    assert len(wider) == 5

    sooner = (expires - timedelta(days=1)).isoformat()
    narrow = mint({"rpm": 5, "tpm": 10, "budget_usd": "2", "budget_period": "day", "expires_at": sooner,
                   "allowed_models": ["mock"]})
    assert narrow.status_code == 201, narrow.text
    assert (narrow.json()["rpm"], narrow.json()["tpm"], narrow.json()["budget_usd"]) == (5, 10, "2.000000")
    assert narrow.json()["budget_key_id"] == parent["id"]
    # The grandchild of a narrow child is held to the child, not to the parent.
    for body, param in (({"rpm": 6}, "rpm"), ({"budget_usd": "2.5", "budget_period": "day"}, "budget_usd")):
        resp = call(db_stack, "POST", "/me/keys", {"name": "g"} | body, headers=bearer(narrow.json()["key"]))
        assert_error(resp, 403, "exceeds_calling_key")
        assert resp.json()["error"]["param"] == param
    grandchild = call(db_stack, "POST", "/me/keys", {"name": "g"}, headers=bearer(narrow.json()["key"]))
    assert grandchild.status_code == 201 and grandchild.json()["budget_key_id"] == narrow.json()["id"]
    # A key without a budget of its own passes on the budget it shares.
    resp = call(db_stack, "POST", "/me/keys", {"name": "gg"}, headers=bearer(child.json()["key"]))
    assert resp.status_code == 201 and resp.json()["budget_key_id"] == parent["id"], resp.text
    resp = call(db_stack, "POST", "/me/keys", {"name": "gg", "budget_usd": "1", "budget_period": "month"},
                headers=bearer(child.json()["key"]))
    assert_error(resp, 403, "exceeds_calling_key")
    assert resp.json()["error"]["param"] == "budget_period"

    # A caller signed in with a token is no key: it has no key restrictions to pass on.
    email = unique_email("jwt-parent")
    call(db_stack, "PATCH", f"/admin/users/{user['id']}", {"email": email, "password": "jwt password 1"})
    login = httpx.post(f"{db_stack.url}/auth/login", json={"email": email, "password": "jwt password 1"}, timeout=20)
    free = call(db_stack, "POST", "/me/keys", {"name": "free", "rpm": 1000},
                headers=bearer(login.json()["access_token"]))
    assert free.status_code == 201, free.text
    assert free.json()["budget_usd"] is None and free.json()["expires_at"] is None and free.json()["rpm"] == 1000


def test_a_minted_key_shares_the_calling_keys_budget(db_stack: Stack) -> None:
    """A key's own budget is at most its maker's budget (not what is left of
    it: what it spends counts against its maker's budget anyway)."""
    user = new_user(db_stack)
    assert call(db_stack, "POST", f"/admin/users/{user['id']}/credits", {"amount_usd": "50"}).status_code == 201
    parent = new_key(db_stack, user["id"], budget_usd="5", budget_period="month")
    assert chat(db_stack, parent["key"], "pricey").status_code == 200
    spent = -sum(Decimal(r["amount_usd"]) for r in call(
        db_stack, "GET", f"/admin/users/{user['id']}/transactions").json()["data"] if r["kind"] == "charge")
    assert spent > 0
    resp = call(db_stack, "POST", "/me/keys", {"name": "more", "budget_usd": "5.01", "budget_period": "month"},
                headers=bearer(parent["key"]))
    assert_error(resp, 403, "exceeds_calling_key")
    assert resp.json()["error"]["param"] == "budget_usd"
    whole = call(db_stack, "POST", "/me/keys", {"name": "all", "budget_usd": "5", "budget_period": "month"},
                 headers=bearer(parent["key"]))
    assert whole.status_code == 201, whole.text
    assert (whole.json()["budget_usd"], whole.json()["budget_key_id"]) == ("5.000000", parent["id"])
    child = call(db_stack, "POST", "/me/keys", {"name": "rest"}, headers=bearer(parent["key"]))
    assert child.status_code == 201, child.text
    assert (child.json()["budget_usd"], child.json()["budget_key_id"]) == (None, parent["id"])


def test_me_with_a_jwt(db_stack: Stack) -> None:
    email = unique_email("jwt")
    user = new_user(db_stack, email=email, password="jwt password 1")
    login = httpx.post(f"{db_stack.url}/auth/login", json={"email": email, "password": "jwt password 1"}, timeout=20)
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    assert call(db_stack, "GET", "/me", headers=bearer(token)).json()["id"] == user["id"]
    made = call(db_stack, "POST", "/me/keys", {"name": "from jwt"}, headers=bearer(token))
    assert made.status_code == 201, made.text
    assert chat(db_stack, made.json()["key"]).status_code == 200
    listed = call(db_stack, "GET", "/me/keys", headers=bearer(token)).json()
    assert [k["id"] for k in listed["data"]] == [made.json()["id"]]
    assert call(db_stack, "DELETE", f"/me/keys/{made.json()['id']}", headers=bearer(token)).status_code == 200
    assert_error(chat(db_stack, made.json()["key"]), 401)


@pytest.mark.parametrize("body", [
    {}, {"name": ""}, {"name": "n" * 201}, {"name": "k", "rpm": 0}, {"name": "k", "budget_usd": "5"},
    {"name": "k", "expires_at": "1999-01-01"}, {"name": "k", "allowed_models": [""]}, {"name": "nul\u0000"},
])
def test_invalid_my_key_is_400(db_stack: Stack, body: dict[str, Any]) -> None:
    _, key = user_with_key(db_stack)
    assert_error(call(db_stack, "POST", "/me/keys", body, headers=bearer(key)), 400, type_="invalid_request_error")


def test_concurrent_self_service(db_stack: Stack) -> None:
    _, key = user_with_key(db_stack)
    with ThreadPoolExecutor(20) as pool:
        made = list(pool.map(lambda i: call(db_stack, "POST", "/me/keys", {"name": f"p{i}"}, headers=bearer(key)),
                             range(20)))
    assert [r.status_code for r in made] == [201] * 20, [r.text for r in made]
    assert len({r.json()["key"] for r in made}) == 20
    target = made[0].json()["id"]
    with ThreadPoolExecutor(10) as pool:
        revoked = list(pool.map(lambda _: call(db_stack, "DELETE", f"/me/keys/{target}", headers=bearer(key)),
                                range(10)))
    assert [r.status_code for r in revoked] == [200] * 10
    assert len({r.json()["revoked_at"] for r in revoked}) == 1


def test_admin_created_key_is_visible_to_its_user(db_stack: Stack) -> None:
    user, key = user_with_key(db_stack)
    extra = new_key(db_stack, user["id"], name="ops")
    ids = [k["id"] for k in call(db_stack, "GET", "/me/keys", headers=bearer(key)).json()["data"]]
    assert extra["id"] in ids and len(ids) == 2
