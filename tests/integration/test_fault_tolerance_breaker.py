"""Circuit breakers through live gateways (SPEC §8 "Circuit breaker"): a
deployment's circuit opens after ``failure_threshold`` consecutive failures,
gets no calls until ``cooldown_s`` has passed, then one trial decides. With
Redis the state is shared by every process; without Redis (or with Redis
down) each process decides alone, and no request waits on Redis."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import AUTH, MASTER_KEY
from tests.databases import redis_url
from tests.fakes.faulty_server import Plan
from tests.fakes.server import free_port
from tests.integration.faults import FaultyStack, config, faulty_gateway, model, upstream
from tests.integration.processes import gateway_processes

USER = [{"role": "user", "content": "hello"}]
COOLDOWN = 1.0
ROUTING = {"retries": 0, "circuit_breaker": {"failure_threshold": 2, "cooldown_s": COOLDOWN}}


def _chat(http: httpx.Client, url: str, name: str) -> httpx.Response:
    return http.post(f"{url}/v1/chat/completions", json={"model": name, "messages": USER}, headers=AUTH)


def _code(resp: httpx.Response) -> str | None:
    return None if resp.status_code == 200 else resp.json()["error"]["code"]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as client:
        yield client


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultyStack]:
    models = [model("solo", "solo"), model("primary", "primary", fallbacks=["secondary"]),
              model("secondary", "secondary")]
    with faulty_gateway(tmp_path_factory.mktemp("breaker"), models, ROUTING) as running:
        yield running


def test_opens_refuses_without_calling_then_one_trial_decides(stack: FaultyStack, http: httpx.Client) -> None:
    stack.plan("solo", fail_first=3, failure="503")
    assert [_code(_chat(http, stack.url, "solo")) for _ in range(2)] == ["upstream_error"] * 2
    opened_at = time.monotonic()
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=MASTER_KEY, max_retries=0)
    with pytest.raises(openai.InternalServerError) as refused:
        client.chat.completions.create(model="solo", messages=USER)  # type: ignore[arg-type]
    assert refused.value.status_code == 503 and refused.value.code == "no_healthy_deployment"
    assert stack.calls("solo") == 2, "an open circuit gets no calls"
    assert stack.app.state.gateway.router.circuit_states()["up/solo"] == 2

    # Cooled down: one trial, which fails (the third planned failure): open again at once.
    time.sleep(max(0.0, opened_at + COOLDOWN + 0.05 - time.monotonic()))
    assert _code(_chat(http, stack.url, "solo")) == "upstream_error"
    assert _code(_chat(http, stack.url, "solo")) == "no_healthy_deployment"
    assert stack.calls("solo") == 3
    reopened_at = time.monotonic()

    # Cooled down again: the trial is slow; requests meanwhile are refused; its success closes the circuit.
    stack.plan("solo", latency_s=0.5)
    time.sleep(max(0.0, reopened_at + COOLDOWN + 0.05 - time.monotonic()))
    with ThreadPoolExecutor(5) as pool:
        codes = list(pool.map(lambda _: _code(_chat(http, stack.url, "solo")), range(5)))
    assert sorted(codes, key=str) == [None] + ["no_healthy_deployment"] * 4, codes
    assert stack.calls("solo") == 4, "one trial"
    stack.plan("solo")
    assert [_code(_chat(http, stack.url, "solo")) for _ in range(3)] == [None] * 3
    assert stack.app.state.gateway.router.circuit_states()["up/solo"] == 0


def test_an_open_circuit_sends_requests_to_the_fallback(stack: FaultyStack, http: httpx.Client) -> None:
    stack.plan("primary", fail_first=1000, failure="500")
    for _ in range(2):
        resp = _chat(http, stack.url, "primary")
        assert resp.status_code == 200 and resp.headers["x-gateway-deployment"] == "up/secondary"
    for _ in range(3):
        resp = _chat(http, stack.url, "primary")
        assert resp.status_code == 200 and resp.headers["x-gateway-deployment"] == "up/secondary"
    assert stack.calls("primary") == 2, "the open primary is skipped"
    stack.plan("secondary", fail_first=1000, failure="500")
    for _ in range(2):
        _chat(http, stack.url, "secondary")
    assert _code(_chat(http, stack.url, "primary")) == "no_healthy_deployment"


# ------------------------------------------------------- across processes


def test_breaker_state_is_shared_by_processes_through_redis(tmp_path: Path, http: httpx.Client) -> None:
    redis = redis_url()
    name = f"shared-{secrets.token_hex(4)}"  # a deployment no earlier run left state for
    with upstream() as (url, fake):
        cfg = config(url, f"sqlite+aiosqlite:///{tmp_path}/gw.db", [model("shared", name)],
                     {"retries": 0, "circuit_breaker": {"failure_threshold": 2, "cooldown_s": 2.0}}, redis_url=redis)
        with gateway_processes(cfg, tmp_path, 2) as (a, b):
            fake.state.plans[name] = Plan(fail_first=2, failure="503")
            assert [_code(_chat(http, a, "shared")) for _ in range(2)] == ["upstream_error"] * 2
            opened_at = time.monotonic()
            time.sleep(1.2)  # b reads the shared state every 0.5 s
            assert _code(_chat(http, b, "shared")) == "no_healthy_deployment"
            assert fake.state.calls[name] == 2, "b did not call the deployment a found failing"

            # After the cooldown one trial across both processes; the others are refused meanwhile.
            fake.state.plans[name].latency_s = 0.5
            time.sleep(max(0.0, opened_at + 2.1 - time.monotonic()))
            with ThreadPoolExecutor(6) as pool:
                codes = list(pool.map(lambda i: _code(_chat(http, (a, b)[i % 2], "shared")), range(6)))
            assert sorted(codes, key=str) == [None] + ["no_healthy_deployment"] * 5, codes
            assert fake.state.calls[name] == 3

            # The trial's success closed the circuit for both.
            fake.state.plans[name].latency_s = 0
            time.sleep(1.2)
            assert [_code(_chat(http, url_, "shared")) for url_ in (a, b, a, b)] == [None] * 4


def test_redis_down_never_fails_a_request_and_breakers_work_in_process(tmp_path: Path, http: httpx.Client) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with faulty_gateway(tmp_path, [model("solo", "solo")], ROUTING, redis_url=dead_redis) as stack:
        assert _code(_chat(http, stack.url, "solo")) is None
        stack.plan("solo", fail_first=1000, failure="503")
        started = time.monotonic()
        codes = [_code(_chat(http, stack.url, "solo")) for _ in range(4)]
        assert codes == ["upstream_error"] * 2 + ["no_healthy_deployment"] * 2
        assert time.monotonic() - started < 3, "no request waited on Redis"
