"""Limits on Redis share their round trips (issue 12): the decisions of
concurrent requests go to Redis together, token corrections ride along with
the next decision, and none of it changes what callers see — exactly N of M
admitted across processes, a 429 with ``Retry-After`` for the rest, token
headers that reflect real usage, and no correction lost at shutdown."""

from __future__ import annotations

import asyncio
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from llm_gateway.auth.principal import Principal
from llm_gateway.errors import ServiceUnavailable
from llm_gateway.limits import Limiter
from llm_gateway.limits.backends import RedisBackend
from llm_gateway.settings import Deployment, Limit, LimitsSettings, ModelSettings
from tests.integration.processes import gateway_processes
from tests.integration.redis_server import own_redis  # noqa: F401  (fixture)
from tests.integration.test_limits_redis import chat, config, upstream, user_key  # noqa: F401  (fixture)

MODEL = ModelSettings(name="m", deployments=[Deployment(provider="p", model="x")])
LIMITS = LimitsSettings(default_user=Limit(rpm=None, tpm=None))


def user(rpm: int | None = None, tpm: int | None = None) -> Principal:
    return Principal(kind="key", role="user", user_id=f"u{time.time_ns()}", user_rpm=rpm, user_tpm=tpm)


def script_calls(url: str) -> int:
    """EVALSHA commands Redis has run since its statistics were reset."""
    import redis

    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def process(url: str, correct_within_s: float = 0.005) -> tuple[Limiter, Any]:
    """A limiter as one gateway process has it, its script already loaded."""
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    limiter = Limiter(LIMITS, client)
    limiter.redis = RedisBackend(client, correct_within_s)
    warm = await limiter.admit(user(rpm=1), MODEL, 0)
    assert warm is not None and warm.allowed
    return limiter, client


def test_a_hundred_concurrent_decisions_in_two_processes_cost_two_round_trips_and_stay_exact(
    own_redis: tuple[str, subprocess.Popen[bytes]]  # noqa: F811
) -> None:
    url, _ = own_redis

    async def main() -> None:
        (a, ca), (b, cb) = await process(url), await process(url)
        caller = user(rpm=30)
        await ca.config_resetstat()
        admissions = await asyncio.gather(*(
            (a if i % 2 else b).admit(caller, MODEL, 0) for i in range(100)))
        assert script_calls(url) == 2  # one per process, not one per request
        admitted = [x for x in admissions if x is not None and x.allowed]
        refused = [x for x in admissions if x is not None and not x.allowed]
        assert len(admitted) == 30 and len(refused) == 70
        # Counted down exactly once per admitted request, whichever process took it.
        assert sorted(x.states[0].remaining for x in admitted) == list(range(30))
        for x in refused:
            err = x.error()
            assert err.status_code == 429 and x.refused_scope == "user" and x.retry_after_s >= 1
        await ca.aclose()
        await cb.aclose()

    asyncio.run(main())


def test_corrections_ride_with_the_next_decision_and_drain_sends_the_rest(
    own_redis: tuple[str, subprocess.Popen[bytes]]  # noqa: F811
) -> None:
    url, _ = own_redis

    async def main() -> None:
        # Corrections wait an hour unless a decision carries them or drain sends them.
        (a, ca), (b, cb) = await process(url, 3600), await process(url, 3600)
        caller = user(tpm=2000)
        first = await a.admit(caller, MODEL, 300)
        assert first is not None and first.allowed
        a.correct(first, 10)  # used 10 of the 300 admitted
        # Another process does not see it yet: 1700 left, not 1990.
        hog = await b.admit(caller, MODEL, 1900)
        assert hog is not None and not hog.allowed and hog.states[0].remaining < 1900
        # The next decision of the same process carries it, in the same round trip.
        await ca.config_resetstat()
        second = await a.admit(caller, MODEL, 100)
        assert script_calls(url) == 1
        assert second is not None and second.allowed and second.states[0].remaining >= 1880  # uncorrected: 1600
        a.correct(second, 0)  # gives the 100 back; pending in this process only
        await a.drain()  # graceful shutdown: nothing pending is lost
        fits = await b.admit(caller, MODEL, 1980)
        assert fits is not None and fits.allowed
        await ca.aclose()
        await cb.aclose()

    asyncio.run(main())


def test_two_processes_under_a_concurrent_burst_admit_exactly_the_limit_with_retry_after(
    upstream: str, tmp_path: Path  # noqa: F811
) -> None:
    from tests.databases import redis_url

    with gateway_processes(config(upstream, tmp_path, redis_url=redis_url()), tmp_path, 2) as urls:
        key = user_key(urls[0], rpm=30)
        start = time.monotonic()
        with ThreadPoolExecutor(50) as pool:
            burst = list(pool.map(lambda i: chat(urls[i % 2], key), range(100)))
        took = time.monotonic() - start
        admitted = [r for r in burst if r.status_code == 200]
        refused = [r for r in burst if r.status_code != 200]
        # Exactly 30; one more for every 2 s the burst itself took (the limit refills smoothly).
        assert 30 <= len(admitted) <= 30 + int(took // 2), (len(admitted), took)
        assert {r.url.port for r in admitted} == {httpx.URL(u).port for u in urls}
        assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in admitted)[-30:] == list(range(30))
        for r in refused:
            assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
            assert int(r.headers["retry-after"]) >= 1
            assert r.headers["x-ratelimit-remaining-requests"] == "0"


def test_token_headers_after_a_concurrent_burst_reflect_real_usage(
    upstream: str, tmp_path: Path  # noqa: F811
) -> None:
    from tests.databases import redis_url

    with gateway_processes(config(upstream, tmp_path, redis_url=redis_url()), tmp_path, 2) as urls:
        key = user_key(urls[0], tpm=2000)
        # Six at once, each admitted for ~305 tokens (1,830 of 2,000) and using ~15.
        with ThreadPoolExecutor(6) as pool:
            burst = list(pool.map(lambda _: chat(urls[0], key, max_tokens=300), range(6)))
        assert [r.status_code for r in burst] == [200] * 6
        used = sum(int(r.json()["usage"]["total_tokens"]) for r in burst)
        # Uncorrected, a seventh would not fit; corrected, what is left is
        # 2,000 minus the real usage and this request's own estimate (<= 320).
        seventh = chat(urls[0], key, max_tokens=300)
        assert seventh.status_code == 200, seventh.text
        assert int(seventh.headers["x-ratelimit-remaining-tokens"]) >= 2000 - used - 321
        # The other process decides on the same corrected state.
        assert chat(urls[1], key, max_tokens=1200).status_code == 200
        hog = chat(urls[1], key, max_tokens=1990)
        assert hog.status_code == 429 and int(hog.headers["retry-after"]) >= 1



def test_a_batch_that_fails_gives_every_request_in_it_the_configured_fallback(
    own_redis: tuple[str, subprocess.Popen[bytes]]  # noqa: F811
) -> None:
    url, proc = own_redis

    async def main() -> None:
        import redis.asyncio as redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        fail_open = Limiter(LIMITS, client)
        fail_closed = Limiter(LimitsSettings(default_user=Limit(rpm=None, tpm=None), failure_mode="fail_closed"),
                              client)
        proc.kill()
        proc.wait()
        caller = user(rpm=5)
        # Twenty at once in one batch: each falls back to this process's own limits, and is counted.
        # (A lost batch would hang them: wait_for turns that into a failure.)
        admissions = await asyncio.wait_for(
            asyncio.gather(*(fail_open.admit(caller, MODEL, 0) for _ in range(20))), 30)
        assert [x is not None and x.allowed for x in admissions] == [True] * 5 + [False] * 15
        assert fail_open.redis_failures == 20 and not fail_open.watch.up
        # fail_closed: every one of them is refused with the documented error, none hangs.
        refused = await asyncio.wait_for(asyncio.gather(
            *(fail_closed.admit(caller, MODEL, 0) for _ in range(20)), return_exceptions=True), 30)
        assert all(isinstance(x, ServiceUnavailable) and x.code == "rate_limiter_unavailable" for x in refused)
        await fail_open.watch.aclose()
        await fail_closed.watch.aclose()
        await client.aclose()

    asyncio.run(main())
