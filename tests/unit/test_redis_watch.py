"""RedisWatch: a failure stops Redis's use until a PING answers; one probe
per process however many requests fail; /ready's answer counts too."""

from __future__ import annotations

import asyncio

from llm_gateway.redis_watch import RedisWatch


class FakeRedis:
    def __init__(self) -> None:
        self.answering = False
        self.pings = 0

    async def ping(self) -> bool:
        self.pings += 1
        if not self.answering:
            raise ConnectionError("refused")
        return True


def test_a_failure_ends_when_a_ping_answers_and_only_one_probe_runs() -> None:
    async def main() -> None:
        redis = FakeRedis()
        watch = RedisWatch(redis, probe_every_s=0.01)
        for _ in range(50):  # a burst of requests failing at once
            watch.lost("rate limiter", "ConnectionError")
        assert not watch.up
        await asyncio.sleep(0.1)
        assert not watch.up
        assert 3 <= redis.pings <= 11  # one probe, every 0.01 s; not one per failure
        redis.answering = True
        for _ in range(100):
            if watch.up:
                break
            await asyncio.sleep(0.01)
        assert watch.up
        pings = redis.pings
        await asyncio.sleep(0.05)
        assert redis.pings == pings  # the probe stops once Redis answers
        await watch.aclose()

    asyncio.run(main())


def test_ready_answering_ends_the_fallback_at_once_and_a_new_failure_probes_again() -> None:
    async def main() -> None:
        redis = FakeRedis()
        watch = RedisWatch(redis, probe_every_s=10)
        watch.lost("readiness check", "PING failed")
        assert not watch.up
        watch.answered()
        assert watch.up
        watch.lost("response cache", "TimeoutError")  # down again until the next PING answers
        assert not watch.up
        await watch.aclose()
        assert redis.pings == 0

    asyncio.run(main())
