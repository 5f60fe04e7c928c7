"""A key minted by a budgeted key (``POST /me/keys``) shares its maker's
budget, through HTTP on SQLite and PostgreSQL: however many keys a key
makes, they all spend from its one budget, at once or in turn, and each
key's spend is still reported as that key's."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx

from tests.conftest import Stack
from tests.e2e.test_admin_api import assert_error, bearer, call, chat, new_key, new_user

# A "pricey" request holds about 0.13 USD (its most) and costs 0.015 USD.
BUDGET = Decimal("0.3")


def funded_parent(stack: Stack, budget: Decimal = BUDGET) -> tuple[dict[str, Any], dict[str, Any]]:
    user = new_user(stack)
    assert call(stack, "POST", f"/admin/users/{user['id']}/credits", {"amount_usd": "50"}).status_code == 201
    return user, new_key(stack, user["id"], budget_usd=str(budget), budget_period="day")


def mint(stack: Stack, maker: dict[str, Any], **body: Any) -> dict[str, Any]:
    resp = call(stack, "POST", "/me/keys", {"name": "child", **body}, headers=bearer(maker["key"]))
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


def charges(stack: Stack, user_id: str) -> list[dict[str, Any]]:
    """Every charge of the user's ledger, all pages."""
    rows: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = call(stack, "GET", f"/admin/users/{user_id}/transactions", params=params).json()
        rows += page["data"]
        if not page["has_more"]:
            return [r for r in rows if r["kind"] == "charge"]
        params["after"] = page["last_id"]


def spent_by_key(stack: Stack, user_id: str) -> dict[str, Decimal]:
    total: dict[str, Decimal] = {}
    for row in charges(stack, user_id):
        total[row["key_id"]] = total.get(row["key_id"], Decimal(0)) - Decimal(row["amount_usd"])
    return total


def test_keys_made_by_a_key_spend_from_its_one_budget(db_stack: Stack) -> None:
    user, parent = funded_parent(db_stack)
    a, b = mint(db_stack, parent), mint(db_stack, parent)
    assert a["budget_key_id"] == b["budget_key_id"] == parent["id"] and a["budget_usd"] is None

    keys = [a, b, parent]
    sent: list[tuple[str, httpx.Response]] = []
    for i in range(60):  # about 11 requests fit; every one after is refused, whichever key sends it
        key = keys[i % len(keys)]
        sent.append((key["id"], chat(db_stack, key["key"], "pricey")))
    codes = [r.status_code for _, r in sent]
    first_refused = codes.index(402)
    assert set(codes[:first_refused]) == {200} and set(codes[first_refused:]) == {402}, codes
    for _, resp in sent[first_refused:]:
        assert_error(resp, 402, "budget_exceeded", "insufficient_quota")
    assert {k for k, r in sent[:first_refused]} == {a["id"], b["id"], parent["id"]}

    # The family spent at most the parent's budget, each charge on the key that made it.
    spent = spent_by_key(db_stack, user["id"])
    assert sum(spent.values()) <= BUDGET
    assert sum(spent.values()) >= Decimal("0.15")  # the budget was used, not refused at once
    made = Counter(k for k, r in sent if r.status_code == 200)
    for key in keys:
        assert spent[key["id"]] == made[key["id"]] * Decimal("0.015")
    rows = {r["group"]: r for r in call(db_stack, "GET", "/me/usage", params={"group_by": "key"},
                                        headers=bearer(a["key"])).json()["rows"]}
    assert set(rows) >= {k["id"] for k in keys}
    for key in keys:
        assert Decimal(rows[key["id"]]["cost_usd"]) == spent[key["id"]]

    # A grandchild shares it too; revoking the parent leaves the budget shared.
    grandchild = mint(db_stack, a)
    assert grandchild["budget_key_id"] == parent["id"]
    assert call(db_stack, "DELETE", f"/me/keys/{parent['id']}", headers=bearer(b["key"])).status_code in (200, 204)
    for key in (grandchild, a, b):
        assert_error(chat(db_stack, key["key"], "pricey"), 402, "budget_exceeded")
    assert sum(spent_by_key(db_stack, user["id"]).values()) == sum(spent.values())
    # What costs nothing still passes.
    assert chat(db_stack, grandchild["key"], "mock").status_code == 200


def test_a_budget_of_its_own_is_checked_too(db_stack: Stack) -> None:
    """A child may carry a narrower budget of its own: its spend (and its own
    children's) must fit in both that and its maker's."""
    user, parent = funded_parent(db_stack, Decimal("0.5"))
    narrow = mint(db_stack, parent, budget_usd="0.16", budget_period="day")
    leaf, plain = mint(db_stack, narrow), mint(db_stack, parent)
    assert (narrow["budget_key_id"], leaf["budget_key_id"], plain["budget_key_id"]) == \
        (parent["id"], narrow["id"], parent["id"])

    statuses = [chat(db_stack, k["key"], "pricey").status_code for k in (narrow, leaf) * 5]
    assert statuses[0] == 200 and statuses[-1] == 402
    spent = spent_by_key(db_stack, user["id"])
    assert spent.get(narrow["id"], Decimal(0)) + spent.get(leaf["id"], Decimal(0)) <= Decimal("0.16")
    # The narrow budget is spent; the parent's is not.
    assert chat(db_stack, plain["key"], "pricey").status_code == 200
    for _ in range(40):
        if chat(db_stack, plain["key"], "pricey").status_code == 402:
            break
    assert_error(chat(db_stack, parent["key"], "pricey"), 402, "budget_exceeded")
    assert sum(spent_by_key(db_stack, user["id"]).values()) <= Decimal("0.5")


def test_concurrent_requests_through_many_children_never_overspend(db_stack: Stack) -> None:
    user, parent = funded_parent(db_stack)
    keys = [parent] + [mint(db_stack, parent) for _ in range(5)]
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda i: (keys[i % len(keys)]["id"], chat(db_stack, keys[i % len(keys)]["key"],
                                                                             "pricey")), range(80)))
    codes = Counter(r.status_code for _, r in responses)
    assert set(codes) <= {200, 402} and codes[200] >= 1, codes
    assert all(r.json()["error"]["code"] == "budget_exceeded" for _, r in responses if r.status_code == 402)
    assert codes[402] >= 1

    rows = charges(db_stack, user["id"])
    total = -sum(Decimal(r["amount_usd"]) for r in rows)
    assert total <= BUDGET
    assert len(rows) == codes[200]
    ok = {r.headers["x-request-id"]: key for key, r in responses if r.status_code == 200}
    assert {r["request_id"]: r["key_id"] for r in rows} == ok  # each charge on the key that made it
    me = call(db_stack, "GET", "/me", headers=bearer(parent["key"])).json()
    assert Decimal(me["balance_usd"]) == Decimal(50) - total
