"""A Redis restart, as two real gateway processes sharing it see it
(issue 17): while Redis is down the configured fallback answers at once,
and within 1 s of Redis answering again the limits are Redis's again —
``fail_closed`` stops refusing, ``fail_open`` is exact across processes."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import AUTH, gateway_config
from tests.integration.processes import gateway_processes
from tests.integration.redis_server import RestartableRedis, restartable_redis  # noqa: F401  (fixture)
from tests.integration.test_limits_redis import upstream  # noqa: F401  (fixture)

HI = [{"role": "user", "content": "hi"}]
BACK_WITHIN_S = 1.0  # the bar: Redis's limits again this long after it answers
CLIENTS = 8  # concurrent senders, so each process pools several connections that the restart leaves stale
RPM = 10


@dataclass(frozen=True)
class Sent:
    at: float  # time.monotonic() when the request was sent
    took: float
    status: int
    code: str | None




def user_key(base: str, rpm: int) -> str:
    made = httpx.post(f"{base}/admin/users", json={"email": f"rr{time.time_ns()}@example.com", "rpm": rpm},
                      headers=AUTH)
    assert made.status_code == 201, made.text
    key = httpx.post(f"{base}/admin/users/{made.json()['id']}/keys", json={"name": "k"}, headers=AUTH)
    assert key.status_code == 201, key.text
    return str(key.json()["key"])


def chat(client: httpx.Client, base: str, key: str) -> httpx.Response:
    return client.post(f"{base}/v1/chat/completions", json={"model": "compat-test", "messages": HI},
                       headers={"authorization": f"Bearer {key}"})


class Senders:
    """``CLIENTS`` threads sending requests back to back, alternating
    between the processes, until stopped; every request is recorded."""

    def __init__(self, urls: list[str], key: str) -> None:
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(urls[i % len(urls)], key)) for i in range(CLIENTS)]

    def _run(self, base: str, key: str) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                at = time.monotonic()
                r = chat(client, base, key)
                code = r.json()["error"]["code"] if r.status_code != 200 else None
                self.sent.append(Sent(at, time.monotonic() - at, r.status_code, code))

    def __enter__(self) -> Senders:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def restart(redis: RestartableRedis, down_s: float) -> tuple[float, float]:
    """Kill Redis, leave it down ``down_s``, start it on the same port;
    return when it was killed and when it first answered PING."""
    killed = time.monotonic()  # before the kill: an answer refused while it runs is not "before" it
    redis.kill()
    time.sleep(down_s)
    return killed, redis.start()


def config(upstream_url: str, folder: Path, redis: RestartableRedis, mode: str) -> dict[str, Any]:
    return gateway_config({"openai": upstream_url}, f"sqlite+aiosqlite:///{folder}/gw.db") | {
        "redis_url": redis.url, "limits": {"default_user": {"rpm": None, "tpm": None}, "failure_mode": mode}}


def fallbacks(base: str) -> float:
    """Decisions this process took in memory because Redis failed."""
    series = 'gateway_redis_fallbacks_total{component="limits"}'
    line = next(x for x in httpx.get(f"{base}/metrics").text.splitlines() if x.startswith(series))
    return float(line.split()[-1])


def report(sent: list[Sent], killed: float, answered: float) -> None:
    after = [s for s in sent if s.at >= answered]
    first_ok = min((s.at + s.took for s in after if s.status == 200), default=float("nan"))
    print(f"\nfail_closed: {len(sent)} requests; down {answered - killed:.2f} s; "
          f"first 200 {first_ok - answered:.3f} s after Redis answered; last refusal sent "
          f"{max((s.at - answered for s in after if s.status != 200), default=float('nan')):.3f} s after")


def test_fail_closed_stops_refusing_within_a_second_of_redis_answering(
    upstream: str, tmp_path: Path, restartable_redis: RestartableRedis  # noqa: F811
) -> None:
    with gateway_processes(config(upstream, tmp_path, restartable_redis, "fail_closed"), tmp_path, 2) as urls:
        key = user_key(urls[0], rpm=1_000_000)  # a limit that applies (so Redis decides), never reached
        with Senders(urls, key) as senders:
            time.sleep(1.0)  # the pools fill with connections the restart will leave stale
            killed, answered = restart(restartable_redis, down_s=1.5)
            time.sleep(BACK_WITHIN_S + 1.5)
        sent = senders.sent
        report(sent, killed, answered)

        before = [s for s in sent if s.at + s.took < killed]
        during = [s for s in sent if killed + 0.2 <= s.at and s.at + s.took < restartable_redis.started_at]
        late = [s for s in sent if s.at > answered + BACK_WITHIN_S]
        assert len(before) >= 20 and len(during) >= 20 and len(late) >= 20, (len(before), len(during), len(late))
        assert {s.status for s in before} == {200}
        # Down: refused at once, with the documented error, never a hang.
        assert {(s.status, s.code) for s in during} == {(503, "rate_limiter_unavailable")}
        assert max(s.took for s in during) < 2.0
        # Back: nothing sent more than 1 s after Redis answered is refused.
        assert [s for s in late if s.status != 200] == []
        # /ready agrees.
        assert all(httpx.get(f"{u}/ready").status_code == 200 for u in urls)


def test_fail_open_limits_are_exact_across_processes_within_a_second_of_redis_answering(
    upstream: str, tmp_path: Path, restartable_redis: RestartableRedis  # noqa: F811
) -> None:
    with gateway_processes(config(upstream, tmp_path, restartable_redis, "fail_open"), tmp_path, 2) as urls:
        key = user_key(urls[0], rpm=1_000_000)
        fresh = user_key(urls[0], rpm=RPM)  # made now: the burst must not wait on the database
        with Senders(urls, key) as senders:
            time.sleep(1.0)
            killed, answered = restart(restartable_redis, down_s=1.5)
            time.sleep(max(0.0, answered + BACK_WITHIN_S - time.monotonic()))
            fell_back = [fallbacks(u) for u in urls]
            # A user no process has seen: exactly RPM admitted across both processes.
            began = time.monotonic()
            with ThreadPoolExecutor(8) as pool, httpx.Client(timeout=30) as client:
                burst = list(pool.map(lambda i: chat(client, urls[i % 2], fresh), range(4 * RPM)))
            took = time.monotonic() - began
            time.sleep(0.3)
        sent = senders.sent
        print(f"\nfail_open: {len(sent)} requests; down {answered - killed:.2f} s; burst from "
              f"{began - answered:.2f} s after Redis answered: {sum(r.status_code == 200 for r in burst)} "
              f"of {len(burst)} admitted for rpm {RPM}")

        during = [s for s in sent if killed + 0.2 <= s.at and s.at + s.took < restartable_redis.started_at]
        assert len(during) >= 20, len(during)
        # Down: this process's own limits answered, at once.
        assert {s.status for s in during} == {200}
        assert max(s.took for s in during) < 2.0
        assert all(n > 0 for n in fell_back), fell_back
        # Back: from 1 s after Redis answered, no decision is taken in memory any more ...
        assert [fallbacks(u) for u in urls] == fell_back
        # ... and a fresh user gets exactly RPM (one more for every 6 s the burst took, the limit refilling).
        admitted = [r for r in burst if r.status_code == 200]
        assert RPM <= len(admitted) <= RPM + int(took // (60 / RPM)), (len(admitted), took)
        assert {r.url.port for r in admitted} == {httpx.URL(u).port for u in urls}
        assert all(r.status_code == 429 for r in burst if r.status_code != 200)
        assert all(httpx.get(f"{u}/ready").status_code == 200 for u in urls)
