"""Where limit state lives: this process's memory, or Redis.

The Redis backend runs ``gcra.decide`` as a Lua script, on Redis's clock:
every limit that applies to a request is read, decided and charged
atomically, so the limits hold exactly across all processes and instances.
Round trips are shared (``RedisBackend``): the decisions of concurrent
requests and the pending token corrections travel in one script call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from llm_gateway.limits.gcra import PERIOD_US, SLACK_US, Decision, Rule, RuleState, corrected, decide

_PREFIX = "llm-gateway:rl:"
# Token corrections wait at most this long for a decision to carry them.
CORRECT_WITHIN_S = 0.005

log = logging.getLogger("llm_gateway.limits")


class MemoryBackend:
    """Limits for one process. Decisions need no lock: nothing awaits
    between reading and writing the state."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._tats: dict[str, float] = {}
        self._max_keys = max_keys

    async def decide(self, rules: tuple[Rule, ...]) -> Decision:
        return self.decide_now(rules)

    def decide_now(self, rules: tuple[Rule, ...]) -> Decision:
        now = time.time() * 1_000_000
        tats = self._tats
        decision, new = decide(rules, [tats.get(r.key, 0.0) for r in rules], now)
        if decision.allowed:
            for rule, tat in zip(rules, new, strict=True):
                tats[rule.key] = tat
            if len(tats) > self._max_keys:
                self._prune(now)
        return decision

    async def drain(self) -> None:
        """Nothing is pending: corrections apply at once."""

    def correct(self, rules: tuple[Rule, ...], deltas: tuple[int, ...]) -> None:
        now = time.time() * 1_000_000
        for rule, delta in zip(rules, deltas, strict=True):
            self._tats[rule.key] = corrected(self._tats.get(rule.key, 0.0), rule.limit, delta, now)

    def _prune(self, now: float) -> None:
        """Forget buckets that are full again (their state is the default)."""
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]


# One call decides a batch of requests, in order, after applying pending
# token corrections; it is atomic as a whole, so each request's decision is
# exactly what a script of its own would have decided at that point.
# KEYS: the distinct limit keys. ARGV: period, slack, then the corrections
# (count, then key index, limit, delta each), then the requests (count, then
# per request its rule count and key index, limit, cost per rule).
# Returns, per request: allowed, retry_after_us, then remaining, reset_us per rule.
_BATCH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local max_slack = tonumber(ARGV[2])
local tats, dirty = {}, {}
local function tat_of(k)
  local v = tats[k]
  if v == nil then
    v = tonumber(redis.call('GET', KEYS[k]) or '0')
    tats[k] = v
  end
  if v < now then v = now end
  return v
end
local p = 4
for _ = 1, tonumber(ARGV[3]) do
  local k, limit, delta = tonumber(ARGV[p]), tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2])
  p = p + 3
  local after = tat_of(k) + delta * period / limit
  if after < now then after = now end
  tats[k] = after
  dirty[k] = true
end
local out = {}
local requests = tonumber(ARGV[p])
p = p + 1
for _ = 1, requests do
  local n = tonumber(ARGV[p])
  p = p + 1
  local ks, base, new, step, slack = {}, {}, {}, {}, {}
  local allowed, wait = 1, 0
  for i = 1, n do
    local k, limit, cost = tonumber(ARGV[p]), tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2])
    p = p + 3
    local T = period / limit
    local tat = tat_of(k)
    local probe = tat + math.min(cost, limit) * T
    ks[i] = k
    slack[i] = math.min(max_slack, T / 2)
    base[i] = tat
    new[i] = tat + cost * T
    step[i] = T
    if probe - now > period + slack[i] then
      allowed = 0
      if probe - now - period > wait then wait = probe - now - period end
    end
  end
  out[#out + 1] = allowed
  out[#out + 1] = string.format('%.0f', wait)
  for i = 1, n do
    local after = base[i]
    if allowed == 1 then
      after = new[i]
      tats[ks[i]] = after
      dirty[ks[i]] = true
    end
    local remaining = math.floor((now + period - after + slack[i]) / step[i])
    if remaining < 0 then remaining = 0 end
    out[#out + 1] = remaining
    out[#out + 1] = string.format('%.0f', after - now)
  end
end
for k in pairs(dirty) do
  local after = tats[k]
  if after > now then
    redis.call('SET', KEYS[k], string.format('%.17g', after), 'PX', math.ceil((after - now) / 1000) + 1000)
  else
    redis.call('DEL', KEYS[k])
  end
end
return out
"""

_Pending = tuple[tuple[Rule, ...], "asyncio.Future[Decision]"]


class RedisBackend:
    """Limits shared by every process on one Redis, one round trip at a time.

    A decision is queued and sent by one sender task: while a call is in
    flight, the decisions of other requests queue up and go together in the
    next, so N concurrent requests cost about one round trip, not N. Token
    corrections are summed per limit and ride along with the next call; when
    no decision comes within ``correct_within_s`` they go on their own, and
    ``drain`` sends whatever is left (graceful shutdown loses none)."""

    def __init__(self, client: Any, correct_within_s: float = CORRECT_WITHIN_S) -> None:
        self._script = client.register_script(_BATCH)
        self._within = correct_within_s
        self._decisions: list[_Pending] = []
        self._deltas: dict[tuple[str, int], int] = {}  # (key, limit) -> tokens to add
        self._sender: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.round_trips = 0  # script calls sent (tests and benchmarks read it)

    async def decide(self, rules: tuple[Rule, ...]) -> Decision:
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._decisions.append((rules, future))
        if self._sender is None:
            self._start(False)
        return await future

    def correct(self, rules: tuple[Rule, ...], deltas: tuple[int, ...]) -> None:
        """Add real usage minus the estimate to each token limit, soon."""
        pending = self._deltas
        for rule, delta in zip(rules, deltas, strict=True):
            key = (rule.key, rule.limit)
            pending[key] = pending.get(key, 0) + delta
        if self._sender is None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._within, self._start, True)

    async def drain(self) -> None:
        """Send every queued decision and correction; return when all are done."""
        while True:
            if self._sender is not None:
                await asyncio.wait([self._sender])
            elif self._decisions or self._deltas:
                self._start(True)
            else:
                return

    def _start(self, corrections_due: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send(corrections_due))

    async def _send(self, corrections_due: bool) -> None:
        try:
            while self._decisions or (corrections_due and self._deltas):
                corrections_due = False  # from here on they wait for a decision (or the timer)
                batch, self._decisions = self._decisions, []
                deltas, self._deltas = self._deltas, {}
                try:
                    self._resolve(batch, await self._call(batch, deltas))
                except Exception as exc:
                    if deltas:
                        log.warning("rate limiter: %d token corrections lost (%s)", len(deltas), type(exc).__name__)
                    # Decisions queued meanwhile would wait on the same failing server.
                    batch += self._decisions
                    self._decisions = []
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    return
                except BaseException:
                    for _, future in batch + self._decisions:
                        future.cancel()
                    self._decisions = []
                    raise
        finally:
            self._sender = None
            if self._deltas and self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._within, self._start, True)

    async def _call(self, batch: list[_Pending], deltas: dict[tuple[str, int], int]) -> list[Any]:
        index: dict[str, int] = {}
        keys: list[str] = []

        def key_index(key: str) -> int:
            i = index.get(key)
            if i is None:
                keys.append(_PREFIX + key)
                i = index[key] = len(keys)
            return i

        args: list[Any] = [PERIOD_US, SLACK_US, len(deltas)]
        for (key, limit), delta in deltas.items():
            args += (key_index(key), limit, delta)
        args.append(len(batch))
        for rules, _ in batch:
            args.append(len(rules))
            for rule in rules:
                args += (key_index(rule.key), rule.limit, rule.cost)
        self.round_trips += 1
        out: list[Any] = await self._script(keys=keys, args=args)
        return out

    @staticmethod
    def _resolve(batch: list[_Pending], out: list[Any]) -> None:
        p = 0
        for rules, future in batch:
            n = len(rules)
            states = tuple(RuleState(int(out[p + 2 + 2 * i]), float(out[p + 3 + 2 * i])) for i in range(n))
            decision = Decision(int(out[p]) == 1, states, float(out[p + 1]))
            p += 2 + 2 * n
            if not future.done():  # its request may have been cancelled
                future.set_result(decision)
