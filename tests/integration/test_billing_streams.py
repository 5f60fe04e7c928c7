"""Streams are billed: from the provider's usage when it arrives (asked for
upstream even when the client did not), and for what was produced when the
client cuts the stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import AUTH, Stack, running_stack
from tests.databases import database
from tests.integration.money import credit, settled


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def money_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("streams")
    with database(request.param, folder) as url, running_stack(folder, url) as stack:
        yield stack


def _funded_key(stack: Stack, amount: str = "5") -> tuple[str, str]:
    user = httpx.post(f"{stack.url}/admin/users", json={"email": f"s{time.time_ns()}@example.com"}, headers=AUTH)
    key = httpx.post(f"{stack.url}/admin/users/{user.json()['id']}/keys", json={"name": "s"}, headers=AUTH)
    credit(stack.database_url, user.json()["id"], amount)
    return user.json()["id"], key.json()["key"]


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_charged_from_provider_usage(money_stack: Stack, include_usage: bool) -> None:
    user_id, key = _funded_key(money_stack)
    client = openai.OpenAI(base_url=f"{money_stack.url}/v1", api_key=key, max_retries=0)
    messages: Any = [{"role": "user", "content": "count the words in this request please"}]
    whole = client.chat.completions.with_raw_response.create(model="pricey", messages=messages)
    raw = client.chat.completions.with_raw_response.create(
        model="pricey", messages=messages, stream=True,
        **({"stream_options": {"include_usage": True}} if include_usage else {}),
    )
    chunks = list(raw.parse())
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    assert (chunks[-1].usage is not None) == include_usage
    b = settled(money_stack.database_url, user_id)
    # The stream cost exactly what the same request cost without streaming.
    assert b.charges[raw.headers["x-request-id"]] == Decimal(whole.headers["x-gateway-cost-usd"])
    assert b.balance == b.ledger_sum and b.reserved == 0


def test_stream_cut_by_client_is_charged_for_what_was_produced(money_stack: Stack) -> None:
    user_id, key = _funded_key(money_stack)
    body = {"model": "pricey", "stream": True, "max_tokens": 50,
            "messages": [{"role": "user", "content": "fake-error:slowstream"}]}
    with httpx.stream("POST", f"{money_stack.url}/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}"}, timeout=10) as resp:
        assert resp.status_code == 200
        request_id = resp.headers["x-request-id"]
        seen = 0
        for line in resp.iter_lines():
            if line.startswith("data:"):
                seen += 1
            if seen == 5:
                break
    b = settled(money_stack.database_url, user_id)
    assert b.open_holds == 0 and b.reserved == 0
    charged = b.charges[request_id]
    # Prompt (~4 tokens at 0.001) plus at least the 5 chunks seen (at 0.002 each), far below the hold.
    assert Decimal("0.01") <= charged < Decimal("0.2")
    assert b.balance == b.ledger_sum == Decimal(5) - charged


def test_stream_failing_before_first_byte_is_not_charged(money_stack: Stack) -> None:
    user_id, key = _funded_key(money_stack)
    body = {"model": "pricey", "stream": True, "messages": [{"role": "user", "content": "fake-error:500"}]}
    resp = httpx.post(f"{money_stack.url}/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}"}, timeout=10)
    assert resp.status_code == 502
    b = settled(money_stack.database_url, user_id)
    assert b.charges == {} and b.balance == Decimal(5) and b.reserved == 0


def test_insufficient_balance_is_402_before_calling_the_provider(money_stack: Stack) -> None:
    _user_id, key = _funded_key(money_stack, amount="0.001")
    before = len(money_stack.requests_to("openai"))
    resp = httpx.post(f"{money_stack.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": "pricey", "messages": [{"role": "user", "content": "hello"}]}, timeout=10)
    assert resp.status_code == 402
    assert resp.json()["error"] == {"message": resp.json()["error"]["message"], "type": "insufficient_quota",
                                    "param": None, "code": "insufficient_quota"}
    assert len(money_stack.requests_to("openai")) == before
    # A model priced at zero needs no balance.
    ok = httpx.post(f"{money_stack.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                    json={"model": "mock", "messages": [{"role": "user", "content": "hello"}]}, timeout=10)
    assert ok.status_code == 200


def test_money_costs_two_round_trips_per_request_on_postgresql(money_stack: Stack) -> None:
    """At one request at a time: one round trip to reserve, one to settle,
    through the money writer's own connection; nothing through the ORM."""
    if not money_stack.database_url.startswith("postgresql"):
        pytest.skip("the round-trip budget is PostgreSQL's; SQLite has no network round trips")
    from sqlalchemy import event

    _user_id, key = _funded_key(money_stack)
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "pricey", "messages": [{"role": "user", "content": "hello"}]}
    assert httpx.post(f"{money_stack.url}/v1/chat/completions", json=body, headers=headers).status_code == 200
    time.sleep(0.3)  # let the warm-up's background writes finish
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "usage_records" not in statement:  # written in batches, off the request path
            statements.append(statement.split()[0])

    gateway = money_stack.app.state.gateway
    engine = gateway.db.engine.sync_engine
    before = gateway.ledger.money.round_trips
    event.listen(engine, "before_cursor_execute", count)
    try:
        resp = httpx.post(f"{money_stack.url}/v1/chat/completions", json=body, headers=headers)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert resp.status_code == 200
    assert statements == [], statements
    assert gateway.ledger.money.round_trips - before == 2  # one to reserve, one to settle
