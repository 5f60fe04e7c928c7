"""Where limit state lives: this process's memory, or Redis.

The Redis backend runs ``gcra.decide`` as one Lua script: every limit that
applies to a request is read, decided and charged in a single atomic round
trip, on Redis's clock, so the limits hold exactly across all processes
and instances.
"""

from __future__ import annotations

import time
from typing import Any

from llm_gateway.limits.gcra import PERIOD_US, SLACK_US, Decision, Rule, RuleState, corrected, decide

_PREFIX = "llm-gateway:rl:"


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

    async def correct(self, rules: tuple[Rule, ...], deltas: tuple[int, ...]) -> None:
        self.correct_now(rules, deltas)

    def correct_now(self, rules: tuple[Rule, ...], deltas: tuple[int, ...]) -> None:
        now = time.time() * 1_000_000
        for rule, delta in zip(rules, deltas, strict=True):
            self._tats[rule.key] = corrected(self._tats.get(rule.key, 0.0), rule.limit, delta, now)

    def _prune(self, now: float) -> None:
        """Forget buckets that are full again (their state is the default)."""
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]


# KEYS: one per rule. ARGV: period, slack, then (limit, cost) per rule.
# Returns {allowed, retry_after_us, remaining_1, reset_us_1, …}.
_DECIDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local max_slack = tonumber(ARGV[2])
local n = #KEYS
local base, new, step, slack = {}, {}, {}, {}
local allowed = 1
local wait = 0
for i = 1, n do
  local limit = tonumber(ARGV[1 + 2 * i])
  local cost = tonumber(ARGV[2 + 2 * i])
  local T = period / limit
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local probe = tat + math.min(cost, limit) * T
  slack[i] = math.min(max_slack, T / 2)
  base[i] = tat
  new[i] = tat + cost * T
  step[i] = T
  if probe - now > period + slack[i] then
    allowed = 0
    if probe - now - period > wait then wait = probe - now - period end
  end
end
local out = {allowed, string.format('%.0f', wait)}
for i = 1, n do
  local after = base[i]
  if allowed == 1 then
    after = new[i]
    redis.call('SET', KEYS[i], string.format('%.17g', after), 'PX', math.ceil((after - now) / 1000) + 1000)
  end
  local remaining = math.floor((now + period - after + slack[i]) / step[i])
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = remaining
  out[#out + 1] = string.format('%.0f', after - now)
end
return out
"""

# KEYS: token rules. ARGV: period, then (limit, delta) per rule.
_CORRECT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i])
  local delta = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local after = tat + delta * period / limit
  if after > now then
    redis.call('SET', KEYS[i], string.format('%.17g', after), 'PX', math.ceil((after - now) / 1000) + 1000)
  else
    redis.call('DEL', KEYS[i])
  end
end
return 1
"""


class RedisBackend:
    """Limits shared by every process on one Redis."""

    def __init__(self, client: Any) -> None:
        self._decide = client.register_script(_DECIDE)
        self._correct = client.register_script(_CORRECT)

    async def decide(self, rules: tuple[Rule, ...]) -> Decision:
        args: list[Any] = [PERIOD_US, SLACK_US]
        for rule in rules:
            args += (rule.limit, rule.cost)
        out = await self._decide(keys=[_PREFIX + r.key for r in rules], args=args)
        states = tuple(
            RuleState(int(out[2 + 2 * i]), float(out[3 + 2 * i])) for i in range(len(rules))
        )
        return Decision(int(out[0]) == 1, states, float(out[1]))

    async def correct(self, rules: tuple[Rule, ...], deltas: tuple[int, ...]) -> None:
        args: list[Any] = [PERIOD_US]
        for rule, delta in zip(rules, deltas, strict=True):
            args += (rule.limit, delta)
        await self._correct(keys=[_PREFIX + r.key for r in rules], args=args)
