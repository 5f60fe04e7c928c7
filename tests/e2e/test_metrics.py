"""``/metrics`` after real traffic through the official SDK: counts, token
sums and cost match what the responses said, on one process and across two
worker processes."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llm_gateway.billing.pricing import cost_usd
from llm_gateway.settings import Pricing
from llm_gateway.types import Usage
from tests.conftest import AUTH, MASTER_KEY, Stack, running_stack
from tests.fakes.prometheus import SPEC_FAMILIES, scrape
from tests.integration.processes import gateway_process

GPT_PRICING = Pricing(input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.60"),
                      cached_input_per_mtok=Decimal("0.075"))
METRICS_TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway of its own: counters that only this module's traffic moves."""
    folder = tmp_path_factory.mktemp("metrics")
    with running_stack(folder, f"sqlite+aiosqlite:///{folder}/gw.db",
                       {"observability": {"metrics_token": METRICS_TOKEN}}) as stack:
        yield stack


def _user_key(stack: Stack, **key: Any) -> str:
    with httpx.Client(base_url=stack.url, headers=AUTH, timeout=10) as http:
        user = http.post("/admin/users", json={"email": f"metrics-{secrets.token_hex(4)}@example.com"}).json()
        assert http.post(f"/admin/users/{user['id']}/credits", json={"amount_usd": "5.00"}).status_code == 201
        return str(http.post(f"/admin/users/{user['id']}/keys", json={"name": "k", **key}).json()["key"])


def test_every_family_is_declared_from_start_up(fresh: Stack) -> None:
    got = scrape(fresh.url, {"authorization": f"Bearer {METRICS_TOKEN}"})
    missing = [f for f in SPEC_FAMILIES if not got.declared(f)]
    assert not missing, f"families missing from /metrics: {missing}"
    circuits = {ls["deployment"]: v for n, ls, v in got.samples if n == "gateway_circuit_state"}
    assert circuits["oai/gpt-4o-mini"] == 0 and circuits["mock/mock"] == 0
    # The Grafana dashboard reads only metrics the gateway declares.
    dashboard = (Path(__file__).resolve().parents[2] / "deploy/grafana/dashboards/llm-gateway.json").read_text()
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for name in re.findall(r"gateway_[a-z_]+", dashboard)}
    assert used and not [name for name in used if not got.declared(name)]


def test_metrics_token(fresh: Stack) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": METRICS_TOKEN}):
        resp = httpx.get(f"{fresh.url}/metrics", headers=headers, timeout=10)
        assert resp.status_code == 401
        assert resp.json()["error"]["type"] == "authentication_error"
        assert "gateway_" not in resp.text
    assert httpx.get(f"{fresh.url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"},
                     timeout=10).status_code == 200


def test_metrics_match_the_traffic(fresh: Stack) -> None:
    client = openai.OpenAI(base_url=f"{fresh.url}/v1", api_key=_user_key(fresh), max_retries=0)
    usages: list[Usage] = []
    cost = Decimal(0)
    for i in range(3):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": f"count me {i}"}])
        u = raw.parse().usage
        assert u is not None
        usages.append(Usage(u.prompt_tokens, u.completion_tokens))
        cost += Decimal(raw.headers["x-gateway-cost-usd"])
    for i in range(2):
        last = None
        for chunk in client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": f"stream me {i}"}], stream=True,
                stream_options={"include_usage": True}):
            last = chunk
        assert last is not None and last.usage is not None
        usage = Usage(last.usage.prompt_tokens, last.usage.completion_tokens)
        usages.append(usage)
        cost += cost_usd(GPT_PRICING, usage)
    embedded = 0
    for i in range(2):
        emb = client.embeddings.create(model="emb-test", input=[f"vector {i}", "and another"])
        embedded += emb.usage.prompt_tokens
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model-7", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="badkey-test", messages=[{"role": "user", "content": "x"}])
    limited = openai.OpenAI(base_url=f"{fresh.url}/v1", api_key=_user_key(fresh, rpm=1), max_retries=0)
    limited.chat.completions.create(model="mock", messages=[{"role": "user", "content": "one"}])
    with pytest.raises(openai.RateLimitError):
        limited.chat.completions.create(model="mock", messages=[{"role": "user", "content": "two"}])

    # Refused before naming a caller or a model: counted as "unknown", like an unknown model.
    assert httpx.post(f"{fresh.url}/v1/chat/completions", headers={"authorization": "Bearer gw-" + "n" * 43},
                      json={"model": "gpt-test", "messages": []}).status_code == 401
    assert httpx.post(f"{fresh.url}/v1/messages", headers={"x-api-key": MASTER_KEY},
                      content=b"{not json").status_code == 400

    got = scrape(fresh.url, {"authorization": f"Bearer {METRICS_TOKEN}"})
    requests = "gateway_requests_total"
    assert got.value(requests, model="gpt-test", deployment="oai/gpt-4o-mini", status="200") == 5
    assert got.value(requests, model="emb-test", deployment="oai/text-embedding-3-small", status="200") == 2
    assert got.value(requests, model="unknown", deployment="", status="404") == 1
    assert got.value(requests, model="badkey-test", deployment="oai-badkey/gpt-4o-mini", status="502") == 1
    assert got.value(requests, model="mock", status="200") == 1
    assert got.value(requests, model="mock", status="429") == 1
    assert got.value(requests, model="unknown", deployment="", status="401") == 1
    assert got.value(requests, model="unknown", deployment="", status="400") == 1
    assert got.value(requests) == 13
    assert not [ls for ls in got.labels(requests) if ls["model"] == "no-such-model-7"]

    assert got.value("gateway_tokens_total", model="gpt-test", kind="input") == sum(u.input_tokens for u in usages)
    assert got.value("gateway_tokens_total", model="gpt-test", kind="output") == sum(u.output_tokens for u in usages)
    assert got.value("gateway_tokens_total", model="gpt-test", kind="cached_input") == 0
    assert got.value("gateway_tokens_total", model="emb-test", kind="input") == embedded
    assert got.value("gateway_tokens_total", model="emb-test", kind="output") == 0
    assert cost > 0
    assert abs(Decimal(str(got.value("gateway_cost_usd_total", model="gpt-test"))) - cost) < Decimal("1e-12")

    assert got.value("gateway_request_duration_seconds_count", model="gpt-test") == 5
    assert got.value("gateway_request_duration_seconds_count") == 13
    assert got.value("gateway_time_to_first_token_seconds_count", model="gpt-test") == 2
    assert got.value("gateway_time_to_first_token_seconds_count") == 2
    assert got.value("gateway_upstream_duration_seconds_count", deployment="oai/gpt-4o-mini") == 5
    assert got.value("gateway_upstream_duration_seconds_count", deployment="oai-badkey/gpt-4o-mini") == 1
    bucket = got.value("gateway_request_duration_seconds_bucket", model="gpt-test", le="300.0")
    assert bucket == 5 and got.value("gateway_request_duration_seconds_bucket", model="gpt-test", le="+Inf") == 5

    assert got.value("gateway_rate_limited_total", scope="key") == 1
    assert got.value("gateway_rate_limited_total") == 1
    assert got.value("gateway_cache_requests_total", result="HIT") == 0
    assert got.value("gateway_cache_requests_total") == 13
    assert got.value("gateway_in_flight_requests") == 0


def test_two_worker_processes_add_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each scrape, whichever worker answers it, counts every worker's requests."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    config = {"master_key": MASTER_KEY, "database_url": f"sqlite+aiosqlite:///{tmp_path}/workers.db"}
    total, output = 30, 0
    prefixes = set()
    with gateway_process(config, tmp_path, "gw", workers=2) as base:
        for i in range(total):
            # A new connection each time, so that both workers take some.
            resp = httpx.post(f"{base}/v1/chat/completions", headers=AUTH | {"connection": "close"}, timeout=10,
                              json={"model": "mock", "messages": [{"role": "user", "content": f"hello {i}"}]})
            assert resp.status_code == 200
            output += resp.json()["usage"]["completion_tokens"]
            prefixes.add(resp.headers["x-request-id"][:16])  # the per-process part of the id
        assert len(prefixes) == 2, "one worker served every request"
        for _ in range(4):
            got = scrape(base)
            assert got.value("gateway_requests_total", model="mock", deployment="mock/mock", status="200") == total
            assert got.value("gateway_request_duration_seconds_count", model="mock") == total
            assert got.value("gateway_tokens_total", model="mock", kind="output") == output
            assert got.value("gateway_in_flight_requests") == 0
            assert all(got.declared(f) for f in SPEC_FAMILIES)
