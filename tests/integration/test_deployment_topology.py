"""The production topology (SPEC §1), with real processes: this machine's
PostgreSQL and Redis, two gateway instances with two gunicorn workers each,
and nginx in front with ``deploy/nginx.conf``. Everything goes through nginx
with the official ``openai`` SDK or plain HTTP, as a client would."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from llm_gateway.db.engine import Database
from tests.conftest import AUTH, gateway_config
from tests.databases import database, redis_url
from tests.fakes import openai_server
from tests.fakes.server import LiveServer, free_port, serve_in_thread
from tests.integration import paced_upstream
from tests.integration.money import settled
from tests.integration.topology import (
    Instance,
    Nginx,
    established_connections,
    require_nginx,
    simultaneous_posts,
)

WORKERS = 2
PACED_PRICING = {"input_per_mtok": "1000", "output_per_mtok": "2000"}


@dataclass
class Topology:
    nginx: Nginx
    instances: list[Instance]
    database_url: str
    paced: paced_upstream.PacedState

    @property
    def url(self) -> str:
        return self.nginx.url

    def workers(self) -> list[int]:
        return [pid for i in self.instances for pid in i.worker_pids()]


def _config(fakes: dict[str, LiveServer], paced: LiveServer, database_url: str, tag: str) -> dict[str, Any]:
    config = gateway_config({"openai": fakes["openai"].url}, database_url)
    del config["max_request_bytes"]  # the default, which deploy/nginx.conf's client_max_body_size matches
    config["providers"].append({"name": "paced", "kind": "openai", "api_base": f"{paced.url}/{tag}/v1",
                                "api_key": paced_upstream.API_KEY})
    config["models"].append({"name": "paced-test", "deployments": [{"provider": "paced", "model": "paced-1"}],
                             "pricing": PACED_PRICING, "max_output_tokens": 100})
    # Usage records are written only when a worker stops (or a batch of 60 s):
    # the SIGTERM test sees the shutdown flush.
    return config | {"redis_url": redis_url(), "usage_flush_interval_s": 60,
                     "limits": {"default_user": {"rpm": None, "tpm": None}}}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    binary = require_nginx()
    folder = tmp_path_factory.mktemp("deployment")
    fakes = {"openai": serve_in_thread(openai_server.create_app())}
    paced_app = paced_upstream.create_app()
    paced = serve_in_thread(paced_app)
    instances: list[Instance] = []
    nginx: Nginx | None = None
    try:
        with database("postgresql", folder) as url:  # migrated first, as an operator would
            for n in range(2):
                path = folder / f"gw{n}.yaml"
                path.write_text(yaml.safe_dump(_config(fakes, paced, url, f"gw{n}")))
                instances.append(Instance(f"gw{n}", path, folder, free_port(), WORKERS))
            for instance in instances:
                instance.spawn()
            for instance in instances:
                instance.wait_ready()
            nginx = Nginx(binary, folder / "nginx", free_port(), [f"127.0.0.1:{i.port}" for i in instances])
            nginx.start()
            yield Topology(nginx, instances, url, paced_app.state.paced)
            nginx.stop()
            for instance in instances:  # before the database is dropped
                instance.stop()
    finally:
        if nginx is not None:
            nginx.stop()
        for instance in instances:
            instance.stop()
        for server in (*fakes.values(), paced):
            server.stop()


@pytest.fixture
def topology(deployment: Topology) -> Topology:
    """Both instances up: a test that stopped one gets it back for the next."""
    down = [i for i in deployment.instances if not i.alive]
    for instance in down:
        instance.spawn()
    for instance in down:
        instance.wait_ready()
    if down:
        deployment.nginx.reload()  # forget that nginx saw it fail
    return deployment


def _user(t: Topology, credit_usd: str = "0", **fields: Any) -> tuple[str, str]:
    user = httpx.post(f"{t.url}/admin/users", headers=AUTH, timeout=10,
                      json={"email": f"d{time.time_ns()}@example.com", **fields})
    assert user.status_code == 201, user.text
    user_id = user.json()["id"]
    if credit_usd != "0":
        funded = httpx.post(f"{t.url}/admin/users/{user_id}/credits", json={"amount_usd": credit_usd},
                            headers={**AUTH, "idempotency-key": f"fund-{user_id}"}, timeout=10)
        assert funded.status_code == 201, funded.text
    key = httpx.post(f"{t.url}/admin/users/{user_id}/keys", json={"name": "d"}, headers=AUTH, timeout=10)
    assert key.status_code == 201, key.text
    return user_id, key.json()["key"]


def _burst(t: Topology, key: str, count: int) -> list[tuple[int, Any]]:
    """``count`` chat requests through nginx, all in flight at once; (status, JSON body) of each."""
    body = orjson.dumps({"model": "mock", "messages": [{"role": "user", "content": "hello"}]})
    replies = simultaneous_posts(t.url, "/v1/chat/completions", {"authorization": f"Bearer {key}"}, body, count)
    return [(status, orjson.loads(data)) for status, data in replies]


def _on_every_worker(t: Topology, action: Callable[[], object], attempts: int = 5) -> None:
    """Run ``action`` (a burst through nginx) until one run has reached every
    worker of every instance, so that what it checks spans all four
    processes. Each run starts from fresh nginx workers, whose new upstream
    connections the kernel spreads over the workers' sockets; a worker holding
    one of them afterwards has served a request of that run."""
    for _ in range(attempts):
        t.nginx.reload()
        action()
        idle = [pid for i in t.instances for pid in i.worker_pids() if not established_connections(pid, i.port)]
        if not idle:
            return
    raise AssertionError(f"workers {idle} served nothing: the load did not reach every process")


def test_stream_arrives_chunk_by_chunk(topology: Topology) -> None:
    _, key = _user(topology, "5")
    client = openai.OpenAI(base_url=f"{topology.url}/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="paced-test", messages=[{"role": "user", "content": "pace:20:100"}], stream=True)
    seen = topology.paced.by_request_id(raw.headers["x-request-id"])
    arrivals: list[float] = []
    upstream_done_at_first: bool | None = None
    for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            if not arrivals:
                upstream_done_at_first = seen.finished is not None
            arrivals.append(time.monotonic())
    assert len(arrivals) == 20
    # Not buffered by nginx: the first chunk is here while the upstream is
    # still producing, and the chunks arrive spread over the upstream's ~2 s.
    assert upstream_done_at_first is False
    assert arrivals[-1] - arrivals[0] > 1.0


def test_request_id_passes_through(topology: Topology) -> None:
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
    mine = httpx.post(f"{topology.url}/v1/chat/completions", json=body,
                      headers={**AUTH, "x-request-id": "deploy-test-42"}, timeout=10)
    assert mine.status_code == 200 and mine.headers["x-request-id"] == "deploy-test-42"
    made = httpx.post(f"{topology.url}/v1/chat/completions", json=body, headers=AUTH, timeout=10)
    assert len(made.headers["x-request-id"]) == 32  # nginx's own id, used by the gateway
    # nginx writes its access-log line once the response is out, which can be
    # a moment after the client has read it.
    wanted = ['"request_id":"deploy-test-42"', f'"request_id":"{made.headers["x-request-id"]}"']
    deadline = time.monotonic() + 5
    logged = (topology.nginx.folder / "stdout.log").read_text()
    while not all(w in logged for w in wanted) and time.monotonic() < deadline:
        time.sleep(0.05)
        logged = (topology.nginx.folder / "stdout.log").read_text()
    for line in wanted:
        assert line in logged


def test_metrics_of_an_instance_sum_all_its_workers(topology: Topology) -> None:
    """Prometheus scrapes each instance; whichever worker answers, the
    counters are the sum over all of them."""
    instance = topology.instances[0]

    def served() -> float:
        scrapes = set()
        for _ in range(6):  # a new connection each time: several workers answer
            text_ = httpx.get(f"{instance.url}/metrics", timeout=10).text
            scrapes.add(sum(s.value for f in text_string_to_metric_families(text_) for s in f.samples
                            if s.name == "gateway_requests_total" and s.labels.get("model") == "mock"))
        assert len(scrapes) == 1, f"workers disagree: {scrapes}"
        return scrapes.pop()

    before = served()
    sent = 0
    body = {"model": "mock", "messages": [{"role": "user", "content": "count me"}]}
    for _ in range(5):  # until both workers have served some: their connections are spread by hash
        with httpx.Client(headers=AUTH, timeout=10) as client, ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: client.post(f"{instance.url}/v1/chat/completions", json=body)
                                  .status_code, range(24)))
            assert set(codes) == {200}
            sent += len(codes)
            if all(established_connections(pid, instance.port) for pid in instance.worker_pids()):
                break
    else:
        raise AssertionError("the requests did not reach both workers")
    assert served() == before + sent


def test_rpm_limit_holds_exactly_across_all_workers(topology: Topology) -> None:
    runs: list[tuple[float, list[tuple[int, Any]]]] = []

    def limited_user_burst() -> None:
        _, key = _user(topology, rpm=10)
        started = time.monotonic()
        replies = _burst(topology, key, 40)
        runs.append((time.monotonic() - started, replies))

    _on_every_worker(topology, limited_user_burst)
    for elapsed, replies in runs:
        ok = [body for status, body in replies if status == 200]
        limited = [body for status, body in replies if status == 429]
        # 10 a minute: one more every 6 s, so a burst shorter than that admits exactly 10.
        assert 10 <= len(ok) <= 10 + int(elapsed / 6), [status for status, _ in replies]
        assert len(ok) + len(limited) == 40
        assert all(body["error"]["code"] == "rate_limit_exceeded" for body in limited)


def test_revoked_key_refused_by_every_worker_within_a_second(topology: Topology) -> None:
    _, key = _user(topology)
    _on_every_worker(topology, lambda: _burst(topology, key, 32))  # every worker has the key cached
    key_id = httpx.get(f"{topology.url}/me/keys", headers={"authorization": f"Bearer {key}"},
                       timeout=10).json()["data"][0]["id"]
    assert httpx.delete(f"{topology.url}/admin/keys/{key_id}", headers=AUTH, timeout=10).status_code == 200
    time.sleep(1.0)  # the promise: refused by every process within a second
    refused: list[int] = []
    _on_every_worker(topology, lambda: refused.extend(status for status, _ in _burst(topology, key, 32)))
    assert set(refused) == {401}


def test_billing_is_exact_under_concurrent_load(topology: Topology) -> None:
    user_id, key = _user(topology, "5")
    client = openai.OpenAI(base_url=f"{topology.url}/v1", api_key=key, max_retries=0)

    def call(i: int) -> tuple[str, Decimal | None]:
        messages: Any = [{"role": "user", "content": f"request number {i}"}]
        if i % 3 == 0:
            raw = client.chat.completions.with_raw_response.create(
                model="pricey", messages=messages, stream=True, stream_options={"include_usage": True})
            assert list(raw.parse())[-1].usage is not None
            return raw.headers["x-request-id"], None
        whole = client.chat.completions.with_raw_response.create(model="pricey", messages=messages)
        return whole.headers["x-request-id"], Decimal(whole.headers["x-gateway-cost-usd"])

    with ThreadPoolExecutor(16) as pool:
        sent = list(pool.map(call, range(90)))
    b = settled(topology.database_url, user_id, 10)
    assert len(b.charges) == 90 and set(b.charges) == {rid for rid, _ in sent}
    for rid, cost in sent:
        if cost is not None:
            assert b.charges[rid] == cost
    assert b.reserved == 0 and b.open_holds == 0
    assert b.balance == b.ledger_sum == Decimal(5) - sum(b.charges.values())


def test_killing_one_instance_leaves_new_requests_succeeding(topology: Topology) -> None:
    _, key = _user(topology)
    body = {"model": "mock", "messages": [{"role": "user", "content": "hello"}]}
    results: list[tuple[float, int]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=20) as client:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    status = client.post(f"{topology.url}/v1/chat/completions", json=body).status_code
                except httpx.HTTPError:
                    status = 0
                results.append((started, status))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        victim = topology.instances[0]
        workers = victim.worker_pids()
        victim.kill()
        while any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in workers):
            time.sleep(0.01)
        dead_at = time.monotonic()
        time.sleep(1.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    # A request nginx put on a pooled connection to the dead instance in the
    # instant before it saw that connection close was already sent: not
    # retried (a POST), it fails like the ones in flight. Count from just after.
    after = [status for started, status in results if started > dead_at + 0.2]
    assert len(after) >= 20 and set(after) == {200}, after
    # Even where nginx has not yet counted the dead instance out (its
    # passive-health state fresh after a reload), a request sent there finds
    # the connection refused and is passed to the other instance.
    topology.nginx.reload()
    with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=20) as client:
        assert {client.post(f"{topology.url}/v1/chat/completions", json=body).status_code
                for _ in range(10)} == {200}


def _state(pid: int) -> str:
    try:
        return next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("State:"))
    except (OSError, StopIteration):
        return "zombie"


def test_sigterm_lets_a_stream_finish_and_charges_it(topology: Topology) -> None:
    user_id, key = _user(topology, "5")
    client = openai.OpenAI(base_url=f"{topology.url}/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="paced-test", messages=[{"role": "user", "content": "pace:30:100"}], stream=True,
        stream_options={"include_usage": True})
    request_id = raw.headers["x-request-id"]
    serving = next(i for i in topology.instances if i.name == topology.paced.by_request_id(request_id).tag)
    chunks = raw.parse()
    text = [next(chunks).choices[0].delta.content or ""]
    assert serving.proc is not None
    exit_status: list[int] = []
    stopper = threading.Thread(target=lambda: exit_status.append(serving.terminate(timeout_s=60)))
    stopper.start()  # SIGTERM now, mid-stream; returns when the instance has exited
    time.sleep(0.5)
    # Meanwhile nginx sends new requests to the other instance.
    assert {status for status, _ in _burst(topology, key, 10)} == {200}
    rest = list(chunks)
    stopper.join()
    text += [c.choices[0].delta.content or "" for c in rest if c.choices]
    assert "".join(text) == "".join(f"w{i} " for i in range(30))
    assert rest[-1].usage is not None and rest[-1].usage.completion_tokens == 30
    assert exit_status == [0]
    b = settled(topology.database_url, user_id, 10)
    # The prompt's 7 tokens and the 30 streamed, at 1000 and 2000 USD per million.
    assert b.charges[request_id] == Decimal("0.067")
    assert b.balance == b.ledger_sum and b.reserved == 0
    assert "timeout graceful shutdown exceeded" not in serving.log_tail()
    # Usage is batched every 60 s here: only the shutdown flush can have written it.
    assert _usage_output_tokens(topology.database_url, request_id) == 30


def _usage_output_tokens(database_url: str, request_id: str) -> int | None:
    async def run() -> int | None:
        db = Database(database_url)
        try:
            async with db.engine.connect() as conn:
                row = (await conn.execute(text("SELECT output_tokens FROM usage_records WHERE request_id = :r"),
                                          {"r": request_id})).first()
                return None if row is None else int(row[0])
        finally:
            await db.aclose()

    return asyncio.run(run())
