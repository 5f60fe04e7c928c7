"""Money through HTTP, on SQLite and PostgreSQL: credits (idempotent, also
when 20 identical requests race), adjustments, the ledger; then real traffic
with the ``openai`` SDK reconciled against the ledger, the usage reports
(JSON and CSV, every grouping), ``/me/usage`` and the per-request log."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from llm_gateway.billing.usage import UsageEvent, UsageWriter
from llm_gateway.db.engine import Database
from tests.conftest import AUTH, Stack
from tests.e2e.test_admin_api import assert_error, bearer, call, new_key, new_user

LEDGER_FIELDS = {"id", "object", "kind", "amount_usd", "balance_after_usd", "created_at", "request_id", "key_id",
                 "note"}
REQUEST_FIELDS = {"id", "object", "request_id", "user_id", "key_id", "model", "deployment", "endpoint", "status",
                  "stream", "cache", "input_tokens", "cached_input_tokens", "output_tokens", "cost_usd",
                  "latency_ms", "ttft_ms", "created_at"}
SUMS = ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "cost_usd")
MTOK = Decimal(1_000_000)


def credit(stack: Stack, user_id: str, amount: Any, *, key: str | None = None, note: str | None = None
           ) -> httpx.Response:
    headers = AUTH | ({"idempotency-key": key} if key is not None else {})
    body: dict[str, Any] = {"amount_usd": amount} | ({"note": note} if note is not None else {})
    return call(stack, "POST", f"/admin/users/{user_id}/credits", body, headers=headers)


def ledger(stack: Stack, user_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = call(stack, "GET", f"/admin/users/{user_id}/transactions",
                    params={"limit": 100} | ({"after": after} if after else {}))
        assert page.status_code == 200, page.text
        rows.extend(page.json()["data"])
        if not page.json()["has_more"]:
            return rows
        after = page.json()["last_id"]


def balance(stack: Stack, user_id: str) -> Decimal:
    return Decimal(call(stack, "GET", f"/admin/users/{user_id}").json()["balance_usd"])


# ---------------------------------------------------------------- credits


def test_credit_then_replay_then_conflict(db_stack: Stack) -> None:
    user = new_user(db_stack)
    first = credit(db_stack, user["id"], "10.00", key="order-1", note="welcome")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["transaction_id"].startswith("txn_") and body["balance_usd"] == "10.000000"
    assert body["kind"] == "credit" and body["amount_usd"] == "10.000000"

    # A fractional JSON number is a binary float, not money: a decimal string is (a whole number is too).
    fraction = credit(db_stack, user["id"], 2.5)
    assert fraction.status_code == 400 and fraction.json()["error"]["param"] == "amount_usd"
    assert "decimal string" in fraction.json()["error"]["message"]
    more = credit(db_stack, user["id"], "2.5")
    assert more.status_code == 201 and more.json()["balance_usd"] == "12.500000"

    replay = credit(db_stack, user["id"], "10.00", key="order-1")
    assert replay.status_code == 200, replay.text
    assert replay.json()["transaction_id"] == body["transaction_id"]
    assert replay.json()["balance_usd"] == "10.000000"  # as right after the original
    assert balance(db_stack, user["id"]) == Decimal("12.5")

    assert_error(credit(db_stack, user["id"], "11.00", key="order-1"), 409, "idempotency_key_reused")
    rows = ledger(db_stack, user["id"])
    assert [r["kind"] for r in rows] == ["credit", "credit"]
    assert rows[1]["note"] == "welcome" and rows[1]["id"] == body["transaction_id"]
    assert all(set(r) == LEDGER_FIELDS and r["object"] == "ledger_entry" for r in rows)

    # The same key on another user is another transaction.
    other = new_user(db_stack)
    assert credit(db_stack, other["id"], "10.00", key="order-1").status_code == 201


def test_credit_validation(db_stack: Stack) -> None:
    user = new_user(db_stack)
    amounts: list[Any] = [0, "0", "abc", True, None, "1e10", 1_000_000_001, "1.0000000001", "NaN", "Infinity", [1], {}]
    for amount in amounts:
        resp = credit(db_stack, user["id"], amount)
        assert_error(resp, 400, type_="invalid_request_error")
        assert resp.json()["error"]["param"] == "amount_usd", (amount, resp.text)
    assert_error(call(db_stack, "POST", f"/admin/users/{user['id']}/credits", {}), 400, "missing_field")
    assert_error(credit(db_stack, user["id"], "1", note="x" * 1001), 400)
    assert_error(credit(db_stack, user["id"], "1", note="a\x00b"), 400)
    assert_error(credit(db_stack, user["id"], "1", key="k" * 256), 400)
    assert_error(credit(db_stack, "user_doesnotexist", "1"), 404, "user_not_found")
    assert_error(credit(db_stack, "user_%C3%A9%00", "1"), 404)
    assert credit(db_stack, user["id"], "1000000000").status_code == 201  # the largest amount
    assert credit(db_stack, user["id"], "0.000000001").status_code == 201  # the smallest

    plain = new_key(db_stack, user["id"])["key"]
    for method, path, body in [("POST", f"/admin/users/{user['id']}/credits", {"amount_usd": "1"}),
                               ("GET", f"/admin/users/{user['id']}/transactions", None),
                               ("GET", "/admin/usage", None), ("GET", "/admin/requests", None)]:
        assert_error(call(db_stack, method, path, body, headers=bearer(plain)), 403, "admin_required")
        assert_error(call(db_stack, method, path, body, headers={}), 401)


def test_credit_past_what_a_balance_holds_is_400_and_the_ledger_still_adds_up(db_stack: Stack) -> None:
    """A balance is a 64-bit count of nano-dollars: a credit that would push it
    past 8e9 USD is refused (no overflow, no float), and the balance stays the
    sum of the ledger."""
    user = new_user(db_stack)
    for _ in range(8):
        assert credit(db_stack, user["id"], "1000000000").status_code == 201
    assert balance(db_stack, user["id"]) == Decimal(8_000_000_000)
    for amount in ["1000000000", "0.000000001", 1]:
        resp = credit(db_stack, user["id"], amount)
        assert_error(resp, 400, "balance_too_large", "invalid_request_error")
        assert resp.json()["error"]["param"] == "amount_usd"
    rows = ledger(db_stack, user["id"])
    assert len(rows) == 8
    assert sum(Decimal(r["amount_usd"]) for r in rows) == balance(db_stack, user["id"]) == Decimal(8_000_000_000)
    assert rows[0]["balance_after_usd"] == "8000000000.000000"
    # Adjustments still work from the top, and the balance can fill up again.
    assert credit(db_stack, user["id"], "-0.5").status_code == 201
    assert credit(db_stack, user["id"], "0.5").status_code == 201
    assert balance(db_stack, user["id"]) == sum(Decimal(r["amount_usd"]) for r in ledger(db_stack, user["id"]))


def test_amounts_are_ascii_decimals_and_errors_show_plain_values(db_stack: Stack) -> None:
    user = new_user(db_stack)
    # Arabic-Indic, fullwidth and Devanagari digits; exponents and signs that Decimal would take.
    amounts = ["\u0661\u0662", "\uff11\uff12", "\u0967\u0968", "12e0", "+12", "1_000", "12.", ".5", "0x10"]
    for amount in amounts:
        resp = credit(db_stack, user["id"], amount)
        assert_error(resp, 400, "invalid_value", "invalid_request_error")
        assert resp.json()["error"]["param"] == "amount_usd", amount
        assert "Value error" not in resp.json()["error"]["message"]
    assert len(amounts) == 9
    assert balance(db_stack, user["id"]) == 0 and ledger(db_stack, user["id"]) == []
    too_much = credit(db_stack, user["id"], "1000000001")
    assert_error(too_much, 400)
    assert "Decimal(" not in too_much.text and "1000000000" in too_much.json()["error"]["message"]
    assert credit(db_stack, user["id"], " 12.50 ").json()["balance_usd"] == "12.500000"


def test_concurrent_credits_with_one_key_make_one_transaction(db_stack: Stack) -> None:
    user = new_user(db_stack)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: credit(db_stack, user["id"], "3.21", key="race"), range(20)))
    assert sorted({a.status_code for a in answers}) in ([200, 201], [201]), [a.text for a in answers]
    assert sum(a.status_code == 201 for a in answers) == 1
    ids = {a.json()["transaction_id"] for a in answers}
    assert len(ids) == 1
    assert {a.json()["balance_usd"] for a in answers} == {"3.210000"}
    rows = ledger(db_stack, user["id"])
    assert [r["id"] for r in rows] == list(ids)
    assert balance(db_stack, user["id"]) == Decimal("3.21")


def test_negative_amounts_are_adjustments_that_never_go_below_zero(db_stack: Stack) -> None:
    user = new_user(db_stack)
    assert credit(db_stack, user["id"], "5").status_code == 201
    taken = credit(db_stack, user["id"], "-2.000000001", note="refund to card")
    assert taken.status_code == 201, taken.text
    assert taken.json()["kind"] == "adjustment" and taken.json()["amount_usd"] == "-2.000000001"
    assert taken.json()["balance_usd"] == "2.999999999"
    assert_error(credit(db_stack, user["id"], "-3"), 409, "insufficient_balance")
    assert balance(db_stack, user["id"]) == Decimal("2.999999999")
    rows = ledger(db_stack, user["id"])
    assert [(r["kind"], r["amount_usd"], r["balance_after_usd"]) for r in rows] == [
        ("adjustment", "-2.000000001", "2.999999999"), ("credit", "5.000000", "5.000000")]
    assert credit(db_stack, user["id"], "-2.999999999").json()["balance_usd"] == "0.000000"


def test_transactions_are_paged_newest_first(db_stack: Stack) -> None:
    user = new_user(db_stack)
    made = [credit(db_stack, user["id"], f"{i}.00").json()["transaction_id"] for i in range(1, 6)]
    first = call(db_stack, "GET", f"/admin/users/{user['id']}/transactions", params={"limit": 2}).json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [r["id"] for r in first["data"]] == made[::-1][:2] and first["last_id"] == made[3]
    rest = call(db_stack, "GET", f"/admin/users/{user['id']}/transactions",
                params={"limit": 100, "after": first["last_id"]}).json()
    assert [r["id"] for r in rest["data"]] == made[::-1][2:] and rest["has_more"] is False
    assert [r["balance_after_usd"] for r in rest["data"]] == ["6.000000", "3.000000", "1.000000"]
    empty = call(db_stack, "GET", f"/admin/users/{user['id']}/transactions", params={"after": made[0]}).json()
    assert empty == {"object": "list", "data": [], "has_more": False, "last_id": None}
    assert_error(call(db_stack, "GET", "/admin/users/user_nobody/transactions"), 404)
    assert_error(call(db_stack, "GET", f"/admin/users/{user['id']}/transactions", params={"limit": 101}), 400)


# ---------------------------------------------------------------- traffic


@dataclass
class Sent:
    request_id: str
    stream: bool
    status: int
    usage: dict[str, int] | None = None
    cost_header: str | None = None


def _cost(usage: dict[str, int]) -> Decimal:
    cached = usage["cached"]
    return ((usage["input"] - cached) * Decimal("0.15") + cached * Decimal("0.075")
            + usage["output"] * Decimal("0.60")) / MTOK


def _traffic(stack: Stack, key: str) -> list[Sent]:
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0)
    sent: list[Sent] = []
    for text in ("hello there", "cached: what is two plus two", "a somewhat longer question about billing"):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": text}])
        done = raw.parse()
        assert done.usage is not None
        details = done.usage.prompt_tokens_details
        sent.append(Sent(raw.headers["x-request-id"], False, 200, {
            "input": done.usage.prompt_tokens, "output": done.usage.completion_tokens,
            "cached": details.cached_tokens or 0 if details else 0}, raw.headers["x-gateway-cost-usd"]))
    for text in ("stream me a poem", "cached: stream again please"):
        raw_stream = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": text}], stream=True,
            stream_options={"include_usage": True})
        usage = None
        for chunk in raw_stream.parse():
            if chunk.usage is not None:
                details = chunk.usage.prompt_tokens_details
                usage = {"input": chunk.usage.prompt_tokens, "output": chunk.usage.completion_tokens,
                         "cached": details.cached_tokens or 0 if details else 0}
        assert usage is not None
        sent.append(Sent(raw_stream.headers["x-request-id"], True, 200, usage))
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "fake-error:500"}])
    assert failed.value.status_code == 502
    sent.append(Sent(failed.value.response.headers["x-request-id"], False, 502))
    return sent


def test_traffic_reconciles_ledger_reports_and_request_log(db_stack: Stack) -> None:
    user = new_user(db_stack)
    key = new_key(db_stack, user["id"])
    assert credit(db_stack, user["id"], "1.00").status_code == 201
    sent = _traffic(db_stack, key["key"])
    ok = [s for s in sent if s.status == 200]
    assert sent[-1].status == 502

    # The ledger: one charge per successful request, carrying its id, and
    # the balance is the sum of the ledger.
    rows = ledger(db_stack, user["id"])
    charges = {r["request_id"]: r for r in rows if r["kind"] == "charge"}
    assert sorted(charges) == sorted(s.request_id for s in ok)
    assert len([r for r in rows if r["kind"] == "charge"]) == len(ok)
    assert all(r["key_id"] == key["id"] for r in charges.values())
    for s in ok:
        assert s.usage is not None
        assert Decimal(charges[s.request_id]["amount_usd"]) == -_cost(s.usage), s
        if s.cost_header is not None:
            assert Decimal(s.cost_header) == -Decimal(charges[s.request_id]["amount_usd"])
    spent = -sum(Decimal(r["amount_usd"]) for r in charges.values())
    assert spent > 0
    assert balance(db_stack, user["id"]) == Decimal(1) - spent == sum(Decimal(r["amount_usd"]) for r in rows)
    assert Decimal(rows[0]["balance_after_usd"]) == balance(db_stack, user["id"])

    # Reports: every grouping adds up to the ledger's charges.
    expected = {"requests": len(sent), "input_tokens": sum(s.usage["input"] for s in ok if s.usage),
                "cached_input_tokens": sum(s.usage["cached"] for s in ok if s.usage),
                "output_tokens": sum(s.usage["output"] for s in ok if s.usage)}
    today = datetime.now(UTC).date()
    for group_by, groups in (("model", {"gpt-test"}), ("user", {user["id"]}), ("key", {key["id"]}),
                             ("day", {today.isoformat(), (today - timedelta(days=1)).isoformat()})):
        report = call(db_stack, "GET", "/admin/usage", params={"user_id": user["id"], "group_by": group_by})
        assert report.status_code == 200, report.text
        data = report.json()
        assert data["group_by"] == group_by and data["to"] == today.isoformat()
        assert data["from"] == (today - timedelta(days=29)).isoformat()
        assert len(data["rows"]) == 1 and data["rows"][0]["group"] in groups
        totals = data["totals"]
        assert {k: totals[k] for k in expected} == expected
        assert Decimal(totals["cost_usd"]) == spent
        assert {k: v for k, v in data["rows"][0].items() if k != "group"} == totals

        table = call(db_stack, "GET", "/admin/usage",
                     params={"user_id": user["id"], "group_by": group_by, "format": "csv"})
        assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
        parsed = list(csv.reader(io.StringIO(table.text)))
        assert parsed[0] == ["group", *SUMS]
        assert parsed[1:] == [[data["rows"][0]["group"], *(str(totals[k]) for k in SUMS)]]

    by_key = call(db_stack, "GET", "/admin/usage", params={"key_id": key["id"], "model": "gpt-test"}).json()
    assert Decimal(by_key["totals"]["cost_usd"]) == spent
    nothing = call(db_stack, "GET", "/admin/usage", params={"user_id": user["id"], "model": "mock"}).json()
    assert nothing["rows"] == [] and nothing["totals"]["requests"] == 0 and nothing["totals"]["cost_usd"] == "0.000000"

    # /me/usage: the caller's own numbers, whatever else is asked.
    mine = call(db_stack, "GET", "/me/usage", params={"group_by": "model"}, headers=bearer(key["key"]))
    assert mine.status_code == 200, mine.text
    assert mine.json()["totals"] == call(db_stack, "GET", "/admin/usage",
                                         params={"user_id": user["id"]}).json()["totals"]
    stranger_key = new_key(db_stack, new_user(db_stack)["id"])["key"]
    theirs = call(db_stack, "GET", "/me/usage", params={"user_id": user["id"]}, headers=bearer(stranger_key))
    assert theirs.status_code == 200 and theirs.json()["rows"] == []

    # The request log: every request, with its status, newest first.
    log = call(db_stack, "GET", "/admin/requests", params={"user_id": user["id"]}).json()
    assert log["object"] == "list" and log["has_more"] is False
    assert [r["request_id"] for r in log["data"]] == [s.request_id for s in reversed(sent)]
    for row, s in zip(log["data"], reversed(sent), strict=True):
        assert set(row) == REQUEST_FIELDS and row["object"] == "request"
        assert row["status"] == s.status and row["stream"] is s.stream and row["key_id"] == key["id"]
        assert row["model"] == "gpt-test" and row["endpoint"] == "chat"
        charged = charges.get(s.request_id)
        assert Decimal(row["cost_usd"]) == (-Decimal(charged["amount_usd"]) if charged else 0)
        if s.usage is not None:
            assert (row["input_tokens"], row["output_tokens"]) == (s.usage["input"], s.usage["output"])
        if s.stream:
            assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["latency_ms"]
    failures = call(db_stack, "GET", "/admin/requests", params={"user_id": user["id"], "status": 502}).json()
    assert [r["request_id"] for r in failures["data"]] == [sent[-1].request_id]
    paged = call(db_stack, "GET", "/admin/requests", params={"user_id": user["id"], "limit": 2}).json()
    assert paged["has_more"] is True and len(paged["data"]) == 2
    nxt = call(db_stack, "GET", "/admin/requests",
               params={"user_id": user["id"], "limit": 100, "after": paged["last_id"]}).json()
    assert [r["id"] for r in paged["data"] + nxt["data"]] == [r["id"] for r in log["data"]]


def test_refused_for_funds_is_recorded_and_not_charged(db_stack: Stack) -> None:
    user = new_user(db_stack)
    key = new_key(db_stack, user["id"])
    client = openai.OpenAI(base_url=f"{db_stack.url}/v1", api_key=key["key"], max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 402
    rid = refused.value.response.headers["x-request-id"]
    assert ledger(db_stack, user["id"]) == [] and balance(db_stack, user["id"]) == 0
    log = call(db_stack, "GET", "/admin/requests", params={"user_id": user["id"]}).json()["data"]
    assert [(r["request_id"], r["status"], r["cost_usd"]) for r in log] == [(rid, 402, "0.000000")]
    mine = call(db_stack, "GET", "/me/usage", headers=bearer(key["key"])).json()
    assert mine["totals"] == {"requests": 1, "input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0,
                              "cost_usd": "0.000000"}


# ---------------------------------------------------------------- parameters


def test_report_parameters(db_stack: Stack) -> None:
    for params, param in ([({"from": "2025-13-01"}, "from"), ({"from": "yesterday"}, "from"),
                           ({"to": "2025-02-30"}, "to"), ({"from": "2025-02-01", "to": "2025-01-31"}, "to"),
                           ({"group_by": "week"}, "group_by"), ({"format": "xml"}, "format"),
                           ({"user_id": "x" * 65}, "user_id"), ({"from": "1" * 40}, "from")]):
        resp = call(db_stack, "GET", "/admin/usage", params=params)
        assert_error(resp, 400, type_="invalid_request_error")
        assert resp.json()["error"]["param"] == param, (params, resp.text)
    old = call(db_stack, "GET", "/admin/usage", params={"from": "2000-01-01", "to": "2000-01-31"}).json()
    assert (old["from"], old["to"], old["rows"]) == ("2000-01-01", "2000-01-31", [])
    one_day = call(db_stack, "GET", "/admin/usage", params={"from": "2024-02-29", "to": "2024-02-29"}).json()
    assert one_day["from"] == one_day["to"] == "2024-02-29"
    only_to = call(db_stack, "GET", "/admin/usage", params={"to": "2024-03-30"}).json()
    assert only_to["from"] == "2024-03-01"
    edges = call(db_stack, "GET", "/admin/usage", params={"from": "0001-01-01", "to": "9999-12-31"})
    assert edges.status_code == 200, edges.text
    header = call(db_stack, "GET", "/admin/usage", params={"format": "csv", "from": "2000-01-01", "to": "2000-01-02"})
    assert header.text.splitlines() == ["group,requests,input_tokens,cached_input_tokens,output_tokens,cost_usd"]
    assert_error(call(db_stack, "GET", "/me/usage"), 404, "user_not_found")
    assert_error(call(db_stack, "GET", "/me/usage", headers={}), 401)
    assert_error(call(db_stack, "GET", "/admin/requests", params={"status": 42}), 400)
    assert_error(call(db_stack, "GET", "/admin/requests", params={"after": "a\u00e9"}), 400)


def _write_usage(database_url: str, events: list[UsageEvent]) -> None:
    async def run() -> None:
        db = Database(database_url)
        writer = UsageWriter(db)
        try:
            for event in events:
                writer.record(event)
            await writer.flush()
        finally:
            await db.aclose()

    asyncio.run(run())


def test_days_are_utc_calendar_days_with_inclusive_ends(db_stack: Stack) -> None:
    user = f"user_days{time.time_ns()}"

    def at(stamp: str, model: str = "m", cost: str = "0.000000001") -> UsageEvent:
        return UsageEvent(request_id="r", model=model, endpoint="chat", status=200, user_id=user, input_tokens=1,
                          cost_usd=Decimal(cost), created_at=datetime.fromisoformat(stamp))

    _write_usage(db_stack.database_url, [
        at("2001-03-03T23:59:59.999999+00:00"),
        at("2001-03-04T00:00:00+00:00", cost="1.5"),
        at("2001-03-04T23:30:00-02:00"),  # 2001-03-05 01:30 UTC
        at("2001-03-05T23:59:59.999999+00:00", model="=HYPERLINK(1)", cost="0.25"),
        at("2001-03-06T00:00:00+00:00"),
    ])
    params = {"user_id": user, "from": "2001-03-04", "to": "2001-03-05"}
    days = call(db_stack, "GET", "/admin/usage", params=params).json()
    assert [(r["group"], r["requests"], r["cost_usd"]) for r in days["rows"]] == [
        ("2001-03-04", 1, "1.500000"), ("2001-03-05", 2, "0.250000001")]
    assert days["totals"]["cost_usd"] == "1.750000001" and days["totals"]["input_tokens"] == 3
    models = call(db_stack, "GET", "/admin/usage", params=params | {"group_by": "model", "format": "csv"})
    assert models.text.splitlines()[1:] == ["'=HYPERLINK(1),1,1,0,0,0.250000", "m,2,2,0,0,1.500000001"]
    keys = call(db_stack, "GET", "/admin/usage", params=params | {"group_by": "key"}).json()
    assert [r["group"] for r in keys["rows"]] == [None]


def test_cli_users_credit(db_stack: Stack, tmp_path: Path) -> None:
    user = new_user(db_stack)
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({"database_url": db_stack.database_url}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "llm_gateway.cli", "users", "credit", *args,
                               "--config", str(config)], capture_output=True, text=True, env=env, timeout=60)
        assert "Traceback" not in done.stderr + done.stdout, done.stderr
        return done

    first = cli("--user", user["email"].upper(), "--amount", "7.25", "--note", "wire", "--idempotency-key", "w1")
    assert first.returncode == 0, first.stderr
    txn, _, shown = first.stdout.splitlines()
    assert txn.startswith("txn_") and shown == "balance_usd: 7.250000"
    again = cli("--user", user["id"], "--amount", "7.25", "--idempotency-key", "w1")
    assert again.returncode == 0 and again.stdout.splitlines()[0] == txn and "used before" in again.stderr
    taken = cli("--user", user["id"], "--amount", "-0.25")
    assert taken.returncode == 0 and taken.stdout.splitlines()[-1] == "balance_usd: 7.000000"
    for args, words in ((("--amount", "-8"), "below zero"), (("--amount", "0"), "--amount: must not be zero"),
                        (("--amount", "x"), "--amount"), (("--amount", "8", "--idempotency-key", "w1"), "different")):
        refused = cli("--user", user["id"], *args)
        assert refused.returncode == 1 and words in refused.stderr, refused.stderr
    unknown = cli("--user", "nobody@example.com", "--amount", "1")
    assert unknown.returncode == 1 and "No user" in unknown.stderr
    rows = ledger(db_stack, user["id"])
    assert [(r["kind"], r["amount_usd"], r["note"]) for r in rows] == [
        ("adjustment", "-0.250000", None), ("credit", "7.250000", "wire")]
    assert balance(db_stack, user["id"]) == Decimal(7)
