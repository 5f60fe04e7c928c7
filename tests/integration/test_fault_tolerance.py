"""Retries, fallbacks, timeouts and load balancing through a live gateway in
front of a fault-injecting upstream (issue 6, SPEC §8): the client gets a
success wherever a retry or a fallback can give one, the right error where
not, and only the attempt that served is charged — once."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY
from tests.integration.faults import ANSWER_COST, QUICK, FaultyStack, faulty_gateway, funded_key, model
from tests.integration.money import settled

ROUTING = {"retries": 2, "backoff_base_s": 0.01, "max_retry_wait_s": 2,
           # The breaker has tests of its own (test_fault_tolerance_breaker.py); here it stays closed.
           "circuit_breaker": {"failure_threshold": 1_000_000, "cooldown_s": 30}}
FAILURES = ["500", "502", "503", "504", "529", "429", "garbage", "cut", "disconnect", "hang", "stall"]
USER = [{"role": "user", "content": "hello"}]


def _first_failures_models() -> list[dict[str, Any]]:
    # One deployment per case, so that each case's counters are its own.
    return [model(f"first-{f}-{s}", f"first-{f}-{s}", provider="up-quick")
            for f in FAILURES for s in ("plain", "stream")]


MODELS = [
    *_first_failures_models(),
    model("emb-first", "emb-first"),
    model("reject", "reject"),
    model("always-503", "always-503"),
    model("always-429", "always-429"),
    model("always-hang", "always-hang", provider="up-quick"),
    model("retry-after", "retry-after"),
    model("dead-or-alive", "dead", "alive"),
    model("stalls", "stalls", provider="up-quick"),
    model("cuts", "cuts"),
    model("cut-early", "cut-early"),
    model("total", "total", provider="up-total"),
    model("model-timeout", "model-timeout", first_byte_timeout_s=QUICK),
    model("main", "main-down", fallbacks=["backup"]),
    {**model("backup", "backup"), "pricing": {"input_per_mtok": "3000", "output_per_mtok": "6000"}},
    model("unreachable", "down:gpt-x", fallbacks=["backup"]),
    model("no-handshake", "silent:gpt-x"),
    model("no-handshake-then-backup", "silent:gpt-x", fallbacks=["backup"]),
    {**model("spread"), "deployments": [{"provider": "up", "model": "w3", "weight": 3},
                                        {"provider": "up", "model": "w1", "weight": 1},
                                        {"provider": "up", "model": "w1b", "weight": 1}]},
    model("bar", "flaky", "solid"),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultyStack]:
    with faulty_gateway(tmp_path_factory.mktemp("faults"), MODELS, ROUTING) as running:
        yield running


@pytest.fixture(scope="module")
def user(stack: FaultyStack) -> tuple[str, str]:
    return funded_key(stack.url, stack.database_url)


def _client(stack: FaultyStack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0, timeout=20)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One keep-alive client (a new one per request costs more than the request)."""
    with httpx.Client(timeout=20, limits=httpx.Limits(max_connections=32)) as client:
        yield client


def _post(http: httpx.Client, stack: FaultyStack, key: str, body: dict[str, Any]) -> httpx.Response:
    return http.post(f"{stack.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


# --------------------------------------------------------------- retries


@pytest.mark.parametrize("failure", FAILURES)
def test_first_failures_are_retried_to_a_success_charged_once(
    stack: FaultyStack, user: tuple[str, str], failure: str
) -> None:
    user_id, key = user
    name = f"first-{failure}-plain"
    stack.plan(name, fail_first=2, failure=failure, hang_s=5)
    raw = _client(stack, key).chat.completions.with_raw_response.create(model=name, messages=USER)  # type: ignore[arg-type]
    reply = raw.parse()
    assert reply.choices[0].message.content == f"served by {name} ok done"
    assert stack.calls(name) == 3
    assert raw.headers["x-gateway-deployment"] == f"up-quick/{name}"
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == Decimal(ANSWER_COST)
    b = settled(stack.database_url, user_id)
    assert b.charges[raw.headers["x-request-id"]] == Decimal(ANSWER_COST)
    assert b.balance == b.ledger_sum


@pytest.mark.parametrize("failure", FAILURES)
def test_a_stream_failing_before_its_first_byte_is_retried(
    stack: FaultyStack, user: tuple[str, str], failure: str
) -> None:
    user_id, key = user
    name = f"first-{failure}-stream"
    # "cut", "disconnect" and "stall" before the first chunk; "hang" before the headers.
    stack.plan(name, fail_first=2, failure=failure, cut_after=0, hang_s=5)
    raw = _client(stack, key).chat.completions.with_raw_response.create(
        model=name, messages=USER, stream=True, stream_options={"include_usage": True})  # type: ignore[arg-type]
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"served by {name} ok done "
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 15
    assert stack.calls(name) == 3
    b = settled(stack.database_url, user_id)
    assert b.charges[raw.headers["x-request-id"]] == Decimal(ANSWER_COST)


def test_embeddings_are_retried(stack: FaultyStack, user: tuple[str, str]) -> None:
    stack.plan("emb-first", fail_first=1, failure="503")
    got = _client(stack, user[1]).embeddings.create(model="emb-first", input=["a", "b"])
    assert len(got.data) == 2 and stack.calls("emb-first") == 2


def test_a_request_error_is_not_retried_and_not_charged(
    stack: FaultyStack, http: httpx.Client, user: tuple[str, str]
) -> None:
    user_id, key = user
    stack.plan("reject", fail_first=100, failure="400")
    resp = _post(http, stack, key, {"model": "reject", "messages": USER})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "context_length_exceeded"
    assert stack.calls("reject") == 1
    assert resp.headers["x-request-id"] not in settled(stack.database_url, user_id).charges


@pytest.mark.parametrize(("name", "failure", "status", "code"), [
    ("always-503", "503", 502, "upstream_error"),
    ("always-429", "429", 429, "rate_limit_exceeded"),
    ("always-hang", "hang", 504, "upstream_timeout"),
])
def test_when_every_attempt_fails_the_client_gets_the_last_error(
    stack: FaultyStack, http: httpx.Client, user: tuple[str, str], name: str, failure: str, status: int, code: str
) -> None:
    user_id, key = user
    stack.plan(name, fail_first=100, failure=failure, retry_after=0.05 if failure == "429" else None, hang_s=5)
    started = time.monotonic()
    resp = _post(http, stack, key, {"model": name, "messages": USER})
    assert resp.status_code == status and resp.json()["error"]["code"] == code, resp.text
    assert stack.calls(name) == 3, "retries: 2 is three attempts"
    if failure == "429":
        assert int(resp.headers["retry-after"]) >= 1
    if failure == "hang":  # three attempts of QUICK each, not the upstream's 5 s hang
        assert time.monotonic() - started < 4
    b = settled(stack.database_url, user_id)
    assert resp.headers["x-request-id"] not in b.charges and b.reserved == 0


def test_retry_after_is_honoured(stack: FaultyStack, http: httpx.Client, user: tuple[str, str]) -> None:
    stack.plan("retry-after", fail_first=1, failure="529", retry_after=0.5)
    assert _post(http, stack, user[1], {"model": "retry-after", "messages": USER}).status_code == 200
    first, second = stack.fake.state.times["retry-after"]
    assert second - first >= 0.5


def test_a_retry_goes_to_another_deployment(stack: FaultyStack, user: tuple[str, str]) -> None:
    stack.plan("dead", fail_first=1000, failure="503")
    client = _client(stack, user[1])
    for _ in range(20):
        assert client.chat.completions.create(model="dead-or-alive", messages=USER)  # type: ignore[arg-type]
    by_request = stack.requests_by_id()
    assert 0 < stack.calls("dead") < 20 and stack.calls("alive") == 20
    for called in by_request.values():
        if set(called) <= {"dead", "alive"}:
            assert called in (["alive"], ["dead", "alive"]), called


# ---------------------------------------------------- after the first byte


def test_a_stream_that_goes_silent_ends_with_a_timeout_event_and_is_not_retried(
    stack: FaultyStack, http: httpx.Client, user: tuple[str, str]
) -> None:
    user_id, key = user
    stack.plan("stalls", fail_first=100, failure="stall", cut_after=3, hang_s=5)
    started = time.monotonic()
    resp = _post(http, stack, key, {"model": "stalls", "stream": True, "messages": USER})
    assert resp.status_code == 200
    frames = [f for f in resp.content.split(b"\n\n") if f]
    assert b"[DONE]" not in resp.content and len(frames) == 4
    assert json.loads(frames[-1][6:])["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 3
    assert stack.calls("stalls") == 1, "never retried once the first byte has gone"
    b = settled(stack.database_url, user_id)
    # Charged once, for what was produced: far less than a whole answer's hold.
    assert 0 < b.charges[resp.headers["x-request-id"]] < Decimal("0.05")


def test_a_stream_cut_after_k_chunks_is_not_retried(
    stack: FaultyStack, http: httpx.Client, user: tuple[str, str]
) -> None:
    stack.plan("cuts", fail_first=100, failure="cut", cut_after=2)
    resp = _post(http, stack, user[1], {"model": "cuts", "stream": True, "messages": USER})
    frames = [f for f in resp.content.split(b"\n\n") if f]
    assert resp.status_code == 200 and len(frames) == 3
    assert json.loads(frames[-1][6:])["error"]["type"] == "upstream_error"
    assert stack.calls("cuts") == 1


# -------------------------------------------------------------- timeouts


def test_total_time_limit(stack: FaultyStack, http: httpx.Client, user: tuple[str, str]) -> None:
    # up-total allows 0.6 s an attempt, a stream included.
    stack.plan("total", latency_s=1)
    resp = _post(http, stack, user[1], {"model": "total", "messages": USER})
    assert resp.status_code == 504 and resp.json()["error"]["type"] == "timeout_error"
    stack.plan("total", chunk_gap_s=0.2)  # never silent for long, but too long in all
    resp = _post(http, stack, user[1], {"model": "total", "stream": True, "messages": USER})
    frames = [f for f in resp.content.split(b"\n\n") if f]
    assert resp.status_code == 200 and json.loads(frames[-1][6:])["error"]["code"] == "upstream_timeout"


def test_a_model_overrides_its_providers_timeouts(
    stack: FaultyStack, http: httpx.Client, user: tuple[str, str]
) -> None:
    stack.plan("model-timeout", fail_first=100, failure="hang", hang_s=5)
    started = time.monotonic()
    resp = _post(http, stack, user[1], {"model": "model-timeout", "messages": USER})
    assert resp.status_code == 504 and time.monotonic() - started < 4


def test_a_connection_that_is_never_accepted_times_out(
    stack: FaultyStack, http: httpx.Client, user: tuple[str, str]
) -> None:
    # "silent" allows QUICK seconds for the TCP handshake, and never completes one;
    # each of the 3 attempts gives up at the connect timeout.
    started = time.monotonic()
    resp = _post(http, stack, user[1], {"model": "no-handshake", "messages": USER})
    assert resp.status_code == 504 and resp.json()["error"]["type"] == "timeout_error", resp.text
    assert 3 * QUICK <= time.monotonic() - started < 3
    started = time.monotonic()
    stream = _client(stack, user[1]).chat.completions.create(
        model="no-handshake-then-backup", messages=USER, stream=True)  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "served by backup ok done "
    assert time.monotonic() - started < 3


# ------------------------------------------------------------- fallbacks


def test_fallback_serves_and_is_what_is_charged(stack: FaultyStack, user: tuple[str, str]) -> None:
    user_id, key = user
    stack.plan("main-down", fail_first=1000, failure="503")
    before = stack.calls("main-down")
    raw = _client(stack, key).chat.completions.with_raw_response.create(model="main", messages=USER)  # type: ignore[arg-type]
    assert raw.parse().choices[0].message.content == "served by backup ok done"
    assert raw.headers["x-gateway-deployment"] == "up/backup"
    assert stack.calls("main-down") - before == 3, "the model's own attempts come first"
    # The fallback's prices: 10 × 3000 + 5 × 6000 per million tokens.
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == Decimal("0.06")
    b = settled(stack.database_url, user_id)
    assert b.charges[raw.headers["x-request-id"]] == Decimal("0.06")
    assert b.balance == b.ledger_sum and b.reserved == 0


def test_fallback_after_connection_errors_streamed(stack: FaultyStack, user: tuple[str, str]) -> None:
    stream = _client(stack, user[1]).chat.completions.create(model="unreachable", messages=USER, stream=True)  # type: ignore[arg-type]
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "served by backup ok done "


def test_the_reservation_covers_the_dearest_model_of_the_chain(stack: FaultyStack, http: httpx.Client) -> None:
    # "main" alone holds 0.02 + the prompt bound; its fallback costs three times as much.
    _, key = funded_key(stack.url, stack.database_url, amount="0.05")
    resp = _post(http, stack, key, {"model": "main", "messages": USER, "max_tokens": 5})
    assert resp.status_code == 402 and resp.json()["error"]["code"] == "insufficient_quota"
    assert _post(http, stack, key, {"model": "spread", "messages": USER, "max_tokens": 5}).status_code == 200


# ------------------------------------------------------------ balancing


def test_load_spreads_by_weight(stack: FaultyStack, http: httpx.Client) -> None:
    before = Counter({m: stack.calls(m) for m in ("w3", "w1", "w1b")})

    def one(_: int) -> int:
        return _post(http, stack, MASTER_KEY, {"model": "spread", "messages": USER}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(400))) == {200}
    seen = Counter({m: stack.calls(m) for m in ("w3", "w1", "w1b")}) - before
    assert sum(seen.values()) == 400
    # Weights 3:1:1; each share within 4.5 standard deviations of 0.6 and 0.2.
    assert abs(seen["w3"] / 400 - 0.6) < 0.11 and abs(seen["w1"] / 400 - 0.2) < 0.09, seen


# ------------------------------------------------------------------ the bar


def test_one_deployment_failing_half_the_time_costs_the_clients_nothing(stack: FaultyStack, http: httpx.Client) -> None:
    """Issue 6's bar: one of two deployments fails 50% of requests; of 1,000
    client requests at least 99.9% succeed, and none is charged twice."""
    user_id, key = funded_key(stack.url, stack.database_url)
    stack.plan("flaky", fail_rate=0.5, failure="503")

    def one(_: int) -> httpx.Response:
        return _post(http, stack, key, {"model": "bar", "messages": USER, "max_tokens": 5})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(one, range(1000)))
    ok = [r for r in responses if r.status_code == 200]
    assert len(ok) >= 999, Counter(r.status_code for r in responses)
    assert stack.fake.state.failures["flaky"] > 100, "the flaky deployment did fail"
    b = settled(stack.database_url, user_id)
    # books() refuses a request charged twice; every success charged exactly its header, failures nothing.
    assert len(b.charges) == len(ok)
    for r in ok:
        assert b.charges[r.headers["x-request-id"]] == Decimal(r.headers["x-gateway-cost-usd"]) == Decimal("0.02")
    assert b.balance == b.ledger_sum == Decimal(100) - Decimal("0.02") * len(ok)
    assert b.reserved == 0
