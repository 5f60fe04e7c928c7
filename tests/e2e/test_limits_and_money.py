"""Rate limits and the reservation together, on SQLite and PostgreSQL.

When the cache has nothing to look up, a request's limits (Redis or
memory) and its reservation (the database) are taken at once. What a caller
sees must not change: a limit's 429 comes before the balance's 402, a
refused request holds and is charged nothing, and every admitted request is
charged exactly once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx

from tests.conftest import AUTH, Stack
from tests.integration.money import books, credit

BODY = {"model": "pricey", "max_tokens": 10, "messages": [{"role": "user", "content": "hi there"}]}


def _user_and_key(stack: Stack, **user: object) -> tuple[str, dict[str, str]]:
    made = httpx.post(f"{stack.url}/admin/users", json={"email": f"lm{time.time_ns()}@example.com", **user},
                      headers=AUTH)
    assert made.status_code == 201, made.text
    key = httpx.post(f"{stack.url}/admin/users/{made.json()['id']}/keys", json={"name": "lm"}, headers=AUTH)
    assert key.status_code == 201, key.text
    return made.json()["id"], {"authorization": f"Bearer {key.json()['key']}"}


def _chat(stack: Stack, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/chat/completions", json=BODY, headers=headers, timeout=30)


def test_requests_refused_by_a_limit_hold_and_cost_nothing(db_stack: Stack) -> None:
    user_id, headers = _user_and_key(db_stack, rpm=3)
    credit(db_stack.database_url, user_id, "5")
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: _chat(db_stack, headers), range(12)))
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) == 3 and len(refused) == 9, [r.status_code for r in responses]
    assert all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in refused)
    b = books(db_stack.database_url, user_id)
    assert b.reserved == 0 and b.open_holds == 0
    assert sorted(b.charges) == sorted(r.headers["x-request-id"] for r in ok)
    assert all(b.charges[r.headers["x-request-id"]] == Decimal(r.headers["x-gateway-cost-usd"]) for r in ok)
    assert b.balance == b.ledger_sum == Decimal(5) - sum(b.charges.values(), Decimal(0)) > 0
    # Refused again later: still nothing held or charged.
    assert _chat(db_stack, headers).status_code == 429
    after = books(db_stack.database_url, user_id)
    assert (after.balance, after.reserved, after.open_holds) == (b.balance, 0, 0)


def test_a_limit_refuses_before_the_balance_does(db_stack: Stack) -> None:
    user_id, headers = _user_and_key(db_stack, rpm=1)
    # No credit: the balance refuses, and the request still counts against the limit.
    first = _chat(db_stack, headers)
    assert first.status_code == 402 and first.json()["error"]["code"] == "insufficient_quota"
    second = _chat(db_stack, headers)
    assert second.status_code == 429, second.text  # over both: the limit answers
    assert int(second.headers["retry-after"]) >= 1
    b = books(db_stack.database_url, user_id)
    assert (b.balance, b.reserved, b.open_holds, b.charges) == (0, 0, 0, {})
