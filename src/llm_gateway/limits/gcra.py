"""GCRA — the generic cell rate algorithm — over a one-minute period.

Each limit keeps one number, its *theoretical arrival time* (TAT): the
moment at which the bucket would be full again. A unit costs ``T =
period / limit`` of time. A request of ``cost`` units is admitted when
``max(TAT, now) + cost·T - now <= period``, which allows at most ``limit``
units at once from idle and then refills smoothly at ``limit`` per minute:
there is no window edge at which twice the limit gets through.

Several limits apply to one request (key, user, model, global; requests and
tokens). They are decided together: the request is admitted only if every
limit admits it, and then every limit is charged — all or nothing. The
in-process and the Redis backends (a Lua port of ``decide`` below) share
this arithmetic; times are in microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

PERIOD_US = 60_000_000.0
# Comparisons allow a little slack: float rounding of the stored TAT (a
# fraction of a microsecond per request) must never refuse the last unit of
# a burst. Never more than half a unit, so never one unit too many.
SLACK_US = 1000.0


def slack(t: float) -> float:
    return min(SLACK_US, t / 2)


@dataclass(slots=True, frozen=True)
class Rule:
    """One limit that applies to a request. ``key`` names its state
    (``u:<user id>:r``); ``scope`` is what it limits, for headers, errors
    and metrics."""

    key: str
    scope: Literal["key", "user", "model", "global"]
    unit: Literal["requests", "tokens"]
    limit: int
    cost: int


@dataclass(slots=True, frozen=True)
class RuleState:
    """A limit after the decision: units left now and microseconds until
    the bucket is full again."""

    remaining: int
    reset_us: float


@dataclass(slots=True, frozen=True)
class Decision:
    allowed: bool
    states: tuple[RuleState, ...]
    retry_after_us: float = 0.0


def admission_cost(rule_cost: int, limit: int) -> int:
    """A request larger than the whole limit is admitted against a full
    bucket rather than refused forever; it is charged in full, so what it
    took beyond the limit delays the requests after it."""
    return min(rule_cost, limit)


def decide(rules: tuple[Rule, ...], tats: list[float], now: float) -> tuple[Decision, list[float]]:
    """The decision for ``rules`` given their stored TATs (0 when absent);
    returns it with the TATs to store (unchanged when refused)."""
    base: list[float] = []
    new: list[float] = []
    allowed = True
    wait = 0.0
    for rule, stored in zip(rules, tats, strict=True):
        t = PERIOD_US / rule.limit
        tat = stored if stored > now else now
        probe = tat + admission_cost(rule.cost, rule.limit) * t
        base.append(tat)
        new.append(tat + rule.cost * t)
        if probe - now > PERIOD_US + slack(t):
            allowed = False
            wait = max(wait, probe - now - PERIOD_US)
    states = []
    for rule, tat, nxt in zip(rules, base, new, strict=True):
        t = PERIOD_US / rule.limit
        after = nxt if allowed else tat
        remaining = max(0, math.floor((now + PERIOD_US - after + slack(t)) / t))
        states.append(RuleState(remaining, after - now))
    return Decision(allowed, tuple(states), wait), (new if allowed else list(tats))


def corrected(tat: float, limit: int, delta: int, now: float) -> float:
    """A token limit's TAT after the real usage differs from the admitted
    estimate by ``delta`` tokens. A refund never reaches below ``now``: an
    idle bucket does not build up credit."""
    base = tat if tat > now else now
    return max(now, base + delta * PERIOD_US / limit)


def format_reset(us: float) -> str:
    """OpenAI's style for ``x-ratelimit-reset-*``: ``120ms``, ``1.5s``, ``6m0s``."""
    if us <= 0:
        return "0s"
    seconds = us / 1_000_000
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{_trim(seconds)}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{_trim(rest)}s"


def _trim(seconds: float) -> str:
    return f"{seconds:.3f}".rstrip("0").rstrip(".")
