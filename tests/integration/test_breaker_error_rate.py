"""Breakers judge error rates, and never shut a whole model out (issue 17):
through a live gateway with the default routing settings, in front of the
fault-injecting fake and a closed port.

- three deployments that each fail half their calls at random keep serving:
  no request is refused for want of a healthy deployment, and what retries
  can give, the client gets;
- one deployment of three down hard (connections refused) stops getting
  traffic within a second, and no client sees it;
- a deployment that cuts every stream after its first chunk opens its
  circuit (a stream that opened used to reset the count);
- a model whose deployments are all open is still served, in panic mode,
  and ``gateway_routing_panic_total`` says so.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from llm_gateway.settings import CircuitBreakerSettings
from tests.conftest import AUTH
from tests.integration.faults import FaultyStack, faulty_gateway, model

USER = [{"role": "user", "content": "hello"}]
REQUESTS = 500
WORKERS = 16
DEFAULTS = CircuitBreakerSettings()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultyStack]:
    models = [model("flaky", "f1", "f2", "f3"), model("one-down", "d1", "d2", "down:gpt-x"),
              model("cutter", "cutter"), model("pair", "p1", "p2")]
    with faulty_gateway(tmp_path_factory.mktemp("error-rate"), models, {}) as running:  # the default routing
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=WORKERS)) as client:
        yield client


def _chat(http: httpx.Client, stack: FaultyStack, name: str, **extra: Any) -> httpx.Response:
    return http.post(f"{stack.url}/v1/chat/completions", json={"model": name, "messages": USER, **extra},
                     headers=AUTH)


def _code(resp: httpx.Response) -> str | None:
    return None if resp.status_code == 200 else resp.json()["error"]["code"]


def _panics(stack: FaultyStack, name: str) -> float:
    text = httpx.get(f"{stack.url}/metrics", timeout=10).text
    found = re.search(rf'^gateway_routing_panic_total{{model="{name}"}} (\S+)$', text, re.M)
    assert found, "the family is there from start-up, one series per model"
    return float(found.group(1))


def test_the_defaults_judge_a_rate_and_panic_below_half() -> None:
    assert (DEFAULTS.mode, DEFAULTS.failure_rate, DEFAULTS.min_calls, DEFAULTS.window_s) == ("error_rate", 0.5, 20, 30)
    assert (DEFAULTS.half_open_trials, DEFAULTS.panic_threshold) == (3, 0.5)
    # The SPEC's example config keeps its meaning: five in a row, one trial.
    legacy = CircuitBreakerSettings.model_validate({"failure_threshold": 5, "cooldown_s": 30})
    assert (legacy.mode, legacy.failure_threshold, legacy.half_open_trials) == ("consecutive", 5, 1)


def test_three_deployments_failing_half_the_time_keep_serving(stack: FaultyStack, http: httpx.Client) -> None:
    for name in ("f1", "f2", "f3"):
        stack.plan(name, fail_rate=0.5, failure="500")

    def one(_: int) -> list[int]:
        """The statuses of one request and of up to two retries by the client,
        as OpenAI's SDK makes by default on a 5xx."""
        statuses = [_chat(http, stack, "flaky").status_code]
        while statuses[-1] >= 500 and len(statuses) < 3:
            statuses.append(_chat(http, stack, "flaky").status_code)
        return statuses

    with ThreadPoolExecutor(WORKERS) as pool:
        runs = list(pool.map(one, range(REQUESTS)))
    first = Counter(r[0] for r in runs)
    every = Counter(s for r in runs for s in r)
    calls = sum(stack.calls(n) for n in ("f1", "f2", "f3"))
    print(f"\nflaky: first tries {dict(first)}, with client retries {sum(r[-1] == 200 for r in runs)}/{REQUESTS} ok, "
          f"{calls} upstream calls, {_panics(stack, 'flaky'):g} attempts in panic")
    assert every[503] == 0, "never refused for want of a healthy deployment"
    # Each request gets 3 attempts (retries: 2), each failing with the share p
    # of calls the fake failed (its seeded draws: about 0.53): 1 - p³ succeed
    # at best, as with no breaker at all. The margin is 3 standard deviations.
    p = sum(stack.fake.state.failures[n] for n in ("f1", "f2", "f3")) / calls
    assert first[200] >= (1 - p**3 - 0.05) * REQUESTS, (first, p)
    assert sum(r[-1] == 200 for r in runs) >= 0.98 * REQUESTS


def test_a_deployment_down_hard_stops_getting_traffic_within_a_second(
    stack: FaultyStack, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    done: list[tuple[float, int]] = []  # (when, status) of each request
    for name in ("d1", "d2"):  # answers take 60 ms: the load lasts ~2 s, however fast the gateway
        stack.plan(name, latency_s=0.06)

    def one(_: int) -> None:
        resp = _chat(http, stack, "one-down")
        done.append((time.time(), resp.status_code))

    with caplog.at_level(logging.INFO, logger="llm_gateway.routing"):
        started = time.time()
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, range(REQUESTS)))
    down = [r.created for r in caplog.records
            if getattr(r, "fields", {}).get("event") == "upstream_attempt_failed"
            and r.fields["deployment"] == "down/gpt-x"]  # type: ignore[attr-defined]
    ok = sum(status == 200 for _, status in done)
    assert ok >= 0.999 * REQUESTS, Counter(status for _, status in done)
    later = started + 1.0
    # After the first second: the down deployment's attempts (each one fails and
    # is logged) against every attempt (a success, or a failure logged).
    down_later = sum(t >= later for t in down)
    attempts_later = sum(t >= later and s == 200 for t, s in done) + down_later
    print(f"\none-down: {ok}/{REQUESTS} ok in {time.time() - started:.1f} s; the down deployment got {len(down)} "
          f"attempts, {down_later} of {attempts_later} after the first second")
    assert attempts_later > 0.25 * REQUESTS, "the load lasted well past the first second"
    assert len(down) >= DEFAULTS.min_calls, "it was tried, and judged"
    assert down_later <= 0.01 * attempts_later
    assert stack.app.state.gateway.router.circuit_states()["down/gpt-x"] == 2


def test_a_deployment_cutting_every_stream_after_its_first_chunk_opens(
    stack: FaultyStack, http: httpx.Client
) -> None:
    stack.plan("cutter", fail_first=1_000_000, failure="cut", cut_after=1)
    codes = []
    for _ in range(DEFAULTS.min_calls + 5):
        with http.stream("POST", f"{stack.url}/v1/chat/completions", headers=AUTH,
                         json={"model": "cutter", "messages": USER, "stream": True}) as resp:
            body = resp.read().decode()
            codes.append(resp.status_code)
            if resp.status_code == 200:
                assert '"error"' in body and "[DONE]" not in body, "the stream broke after its first chunk"
    assert codes == [200] * DEFAULTS.min_calls + [503] * 5, codes
    assert stack.calls("cutter") == DEFAULTS.min_calls, "open: no further calls"
    assert stack.app.state.gateway.router.circuit_states()["up/cutter"] == 2


def test_a_model_whose_circuits_are_all_open_is_served_in_panic(stack: FaultyStack, http: httpx.Client) -> None:
    stack.plan("p1", fail_first=1_000_000, failure="500")
    stack.plan("p2", fail_first=1_000_000, failure="500")
    router = stack.app.state.gateway.router
    for _ in range(100):
        if set(router.circuit_states()[f"up/{p}"] for p in ("p1", "p2")) == {2}:
            break
        assert _code(_chat(http, stack, "pair")) == "upstream_error"
    assert router.circuit_states()["up/p1"] == router.circuit_states()["up/p2"] == 2, "both opened"
    before = _panics(stack, "pair")
    stack.plan("p1")
    stack.plan("p2")  # recovered, though their circuits are open for 30 s more
    answered = Counter(_chat(http, stack, "pair").headers.get("x-gateway-deployment") for _ in range(20))
    assert answered.keys() == {"up/p1", "up/p2"}, "traffic spread over both, not refused"
    assert _panics(stack, "pair") - before == 20


def test_through_redis_a_rate_opens_for_all_and_trials_add_up_across_processes() -> None:
    import asyncio
    import secrets

    import redis.asyncio as aioredis

    from llm_gateway.routing.shared import TRIAL, SharedBreakers
    from tests.databases import redis_url

    label = f"shared-rate/{secrets.token_hex(4)}"  # no earlier run's state

    async def main() -> None:
        client = aioredis.from_url(redis_url())
        a = _rate_breaker(label)
        b = _rate_breaker(label)  # the same deployment in another process
        shared_a = SharedBreakers(client, {label: a}, 30)
        shared_b = SharedBreakers(client, {label: b}, 30)
        try:
            now = time.monotonic()
            for i in range(20):  # a's window: 10 of 20 failed
                if i % 2:
                    assert not a.failed(False, now) or i == 19
                else:
                    a.succeeded(False, now)
            assert not a.closed
            shared_a.failed(a, False, opened=True)
            await asyncio.gather(*shared_a._writes)
            await shared_b.refresh()
            assert not b.closed and b.state(time.monotonic()) == 2, "open for b too, though b saw nothing"

            await client.delete(f"llm-gateway:{{circuit}}:{label}:open")  # the cooldown over, sooner
            for breaker, shared in ((a, shared_a), (b, shared_b), (a, shared_a)):
                breaker.open_until = 0.0
                assert await shared.claim_trial(breaker) == TRIAL
                other = shared_b if shared is shared_a else shared_a
                assert await other.claim_trial(b if breaker is a else a) == 0, "one trial at a time"
                breaker.start_trial()
                breaker.succeeded(True, time.monotonic())
                shared.succeeded(breaker, True)
                await asyncio.gather(*shared._writes)
            await shared_b.refresh()
            assert a.closed and b.closed, "three trials passed, in either process: closed for all"
        finally:
            await shared_a.aclose()
            await shared_b.aclose()
            await client.delete(*(f"llm-gateway:{{circuit}}:{label}{s}" for s in ("", ":open", ":trial")))
            await client.aclose()

    asyncio.run(main())


def _rate_breaker(label: str) -> Any:
    from llm_gateway.routing.breaker import CircuitBreaker

    return CircuitBreaker(label, 20, 30, 3, 0.5, 20, 30)
