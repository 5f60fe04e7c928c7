"""Circuit breakers shared by every process and instance through Redis.

Per deployment, three keys (one hash slot, so the scripts run on a cluster):
``…:<label>`` a hash of consecutive failures ``f``, ``t`` = 1 while the
circuit is tripped (open or half-open) and ``s``, the trials passed since; ``…:<label>:open``, which exists
while the cooldown runs (its expiry is the cooldown, so no two clocks are
compared); ``…:<label>:trial``, the one trial across all processes.

A failure rate is judged by each process over its own attempts (its window
is not shared); what is shared is the verdict: the process that finds the
rate too high opens the circuit for all. Consecutive failures add up across
processes.

Off the hot path: each process reads every deployment's state in one round
trip every ``SYNC_INTERVAL_S`` in the background; a healthy request touches
Redis not at all. Failed attempts (and the success that ends a run of
failures) are written in the background; only the request that would make a
trial waits, once per cooldown, to claim it. Redis failing never fails or
hangs a request: the in-process breakers decide alone, the failure is logged
at most every ``LOG_EVERY_S``, and Redis is written to again as soon as the
background read answers (within ``SYNC_INTERVAL_S``), at most ``RETRY_S`` later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from llm_gateway.routing.breaker import CircuitBreaker

log = logging.getLogger("llm_gateway.routing")

PREFIX = "llm-gateway:{circuit}:"
SYNC_INTERVAL_S = 0.5
RETRY_S = 5.0
LOG_EVERY_S = 30.0
TRIAL_WAIT_S = 0.5  # the longest a trial request waits for Redis before deciding locally
KEEP_S = 86_400  # a deployment's hash outlives its last write by a day
NOT_NOW, TRIAL, CLOSED = 0, 1, 2  # what claiming a trial answers

# KEYS: hash, open, trial. ARGV: threshold, cooldown ms, how (0: a failure;
# 1: a failed trial, open again; 2: this process's window opened it), keep s.
_FAILED = """
local tripped = redis.call('HGET', KEYS[1], 't') == '1'
local failures = redis.call('HINCRBY', KEYS[1], 'f', 1)
if ARGV[3] == '1' or (not tripped and (ARGV[3] == '2' or failures >= tonumber(ARGV[1]))) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  redis.call('HSET', KEYS[1], 't', '1', 's', 0)
  redis.call('DEL', KEYS[3])
  tripped = true
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {failures, tripped and 1 or 0, redis.call('PTTL', KEYS[2])}
"""

# KEYS: hash, open, trial. ARGV: trial (0/1), keep s, trials to pass. Only
# trials close a tripped circuit, once enough have passed (each frees the
# claim for the next); any success resets the failures of a closed one.
_SUCCEEDED = """
local tripped = redis.call('HGET', KEYS[1], 't') == '1'
if ARGV[1] == '1' and tripped and redis.call('HINCRBY', KEYS[1], 's', 1) < tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[3])
elseif ARGV[1] == '1' or not tripped then
  redis.call('HSET', KEYS[1], 'f', 0, 't', 0, 's', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
  tripped = false
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {tonumber(redis.call('HGET', KEYS[1], 'f')) or 0, tripped and 1 or 0, redis.call('PTTL', KEYS[2])}
"""

# KEYS: hash, open, trial. ARGV: trial ttl ms. 1: yours; 0: not now; 2: closed.
_TRIAL = """
if redis.call('HGET', KEYS[1], 't') ~= '1' then return {2, -2} end
local left = redis.call('PTTL', KEYS[2])
if left > 0 then return {0, left} end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then return {1, -2} end
return {0, -2}
"""

# KEYS: hash and open of each deployment in turn.
_READ = """
local out = {}
for i = 1, #KEYS, 2 do
  local v = redis.call('HMGET', KEYS[i], 'f', 't')
  out[#out + 1] = tonumber(v[1]) or 0
  out[#out + 1] = v[2] == '1' and 1 or 0
  out[#out + 1] = redis.call('PTTL', KEYS[i + 1])
end
return out
"""


def _keys(label: str) -> list[str]:
    base = PREFIX + label
    return [base, base + ":open", base + ":trial"]


class SharedBreakers:
    def __init__(self, redis: Any, breakers: Mapping[str, CircuitBreaker], cooldown_s: float) -> None:
        self._redis = redis
        self._breakers = breakers  # each carries its own thresholds
        self._cooldown_ms = max(1, int(cooldown_s * 1000))
        self._failed = redis.register_script(_FAILED)
        self._succeeded = redis.register_script(_SUCCEEDED)
        self._trial = redis.register_script(_TRIAL)
        self._read = redis.register_script(_READ)
        self._read_keys = [k for label in breakers for k in _keys(label)[:2]]
        self._down_until = 0.0
        self._logged_at = -LOG_EVERY_S
        self._poller: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    @property
    def usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def start(self) -> None:
        if self._poller is None and self._read_keys:
            self._poller = asyncio.get_running_loop().create_task(self._poll_forever())

    async def aclose(self) -> None:
        tasks = [t for t in (self._poller, *self._writes) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._poller = None

    # ------------------------------------------------------------ reading

    async def _poll_forever(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(SYNC_INTERVAL_S)

    async def refresh(self) -> None:
        """Adopt every deployment's shared state (one round trip)."""
        try:
            values = await self._read(keys=self._read_keys)
        except Exception as exc:
            self._unavailable(exc)
            return
        if self._down_until:
            self._down_until = 0.0
            log.info("circuit breakers: Redis reachable again; state shared again")
        now = time.monotonic()
        for i, breaker in enumerate(self._breakers.values()):
            f, t, left = values[3 * i: 3 * i + 3]
            breaker.sync(int(f), t == 1, int(left), now)

    # ------------------------------------------------------------ writing

    async def claim_trial(self, breaker: CircuitBreaker) -> int | None:
        """``TRIAL``: this process makes the trial; ``NOT_NOW``: another
        process's trial runs, or the cooldown has not ended everywhere;
        ``CLOSED``: another trial closed it already; ``None``: Redis cannot
        say, and the in-process breaker decides."""
        if not self.usable:
            return None
        try:
            async with asyncio.timeout(TRIAL_WAIT_S):
                code, left = await self._trial(keys=_keys(breaker.label), args=[self._cooldown_ms])
        except Exception as exc:
            self._unavailable(exc)
            return None
        now = time.monotonic()
        if code == CLOSED:
            breaker.sync(0, False, 0, now)
        elif code == NOT_NOW:
            # Ask again when the cooldown ends everywhere, or after the next read.
            breaker.open_until = now + (int(left) / 1000 if int(left) > 0 else SYNC_INTERVAL_S)
        return int(code)

    def failed(self, breaker: CircuitBreaker, trial: bool, opened: bool = False) -> None:
        """``opened``: this failure opened the circuit here (its failure rate)."""
        how = 1 if trial else 2 if opened else 0
        self._write(breaker, self._failed, [breaker.threshold, self._cooldown_ms, how, KEEP_S])

    def succeeded(self, breaker: CircuitBreaker, trial: bool) -> None:
        self._write(breaker, self._succeeded, [int(trial), KEEP_S, breaker.trials])

    def abandoned(self, breaker: CircuitBreaker) -> None:
        if self.usable:
            self._spawn(self._forget_trial(breaker))

    def _write(self, breaker: CircuitBreaker, script: Callable[..., Awaitable[Any]], args: list[int]) -> None:
        if not self.usable:
            return
        breaker.pending += 1
        self._spawn(self._apply(breaker, script(keys=_keys(breaker.label), args=args)))

    async def _apply(self, breaker: CircuitBreaker, result: Awaitable[Any]) -> None:
        """Adopt what the write left in Redis: it includes other processes' failures."""
        try:
            f, t, left = await result
        except Exception as exc:
            breaker.pending -= 1
            self._unavailable(exc)
            return
        breaker.pending -= 1
        breaker.sync(int(f), t == 1, int(left), time.monotonic())

    async def _forget_trial(self, breaker: CircuitBreaker) -> None:
        try:
            await self._redis.delete(_keys(breaker.label)[2])
        except Exception as exc:
            self._unavailable(exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _unavailable(self, exc: Exception) -> None:
        now = time.monotonic()
        self._down_until = now + RETRY_S
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning("circuit breakers: Redis unavailable (%s); deciding in process", type(exc).__name__)
