"""Rate limits: which apply to a request, admission, headers, correction.

Requests per minute and tokens per minute, per key, per user (shared by all
of the user's keys), per model and global. Tokens are admitted from the
request's estimate and corrected once the real usage is known. With Redis
configured every decision is one atomic round trip; when Redis fails the
configured ``failure_mode`` decides: ``fail_open`` falls back to this
process's limits, ``fail_closed`` answers 503 — until Redis answers a PING
again (``RedisWatch``), so a dead Redis costs no request a timeout and a
restarted one is used again within a tenth of a second. Concurrent
decisions share their round trip, and corrections ride along with the next
one (``RedisBackend``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from llm_gateway.auth.principal import Principal
from llm_gateway.errors import RateLimited, ServiceUnavailable
from llm_gateway.limits.backends import MemoryBackend, RedisBackend
from llm_gateway.limits.gcra import Decision, Rule, RuleState, admission_cost, format_reset
from llm_gateway.redis_watch import RedisWatch
from llm_gateway.settings import LimitsSettings, ModelSettings


class Backend(Protocol):
    async def decide(self, rules: tuple[Rule, ...]) -> Decision: ...
    def correct(self, rules: tuple[Rule, ...], deltas: tuple[int, ...]) -> None: ...
    async def drain(self) -> None: ...


@dataclass(slots=True)
class Admission:
    """What admission decided for one request: the limits that applied, in
    the order of ``rules``, and the tokens admitted (to correct later)."""

    rules: tuple[Rule, ...]
    states: tuple[RuleState, ...]
    tokens: int
    backend: Backend
    allowed: bool = True
    refused_scope: str | None = None
    retry_after_s: int = 0

    def error(self) -> RateLimited:
        """The 429 for a refused admission."""
        parts = [f"{r.limit} {r.unit} per minute" for r in self.rules if r.scope == self.refused_scope]
        return RateLimited(
            f"Rate limit reached for {self.refused_scope} ({' and '.join(parts)}). "
            f"Try again in {self.retry_after_s} s.",
            retry_after=self.retry_after_s,
        )

    def headers(self) -> dict[str, str]:
        """``x-ratelimit-*`` for the tightest request and token limits."""
        headers: dict[str, str] = {}
        for unit in ("requests", "tokens"):
            tightest: tuple[Rule, RuleState] | None = None
            for rule, state in zip(self.rules, self.states, strict=True):
                if rule.unit == unit and (tightest is None or state.remaining < tightest[1].remaining):
                    tightest = (rule, state)
            if tightest is not None:
                rule, state = tightest
                headers[f"x-ratelimit-limit-{unit}"] = str(rule.limit)
                headers[f"x-ratelimit-remaining-{unit}"] = str(state.remaining)
                headers[f"x-ratelimit-reset-{unit}"] = format_reset(state.reset_us)
        return headers


class Limiter:
    def __init__(self, settings: LimitsSettings, redis: Any | None = None, watch: RedisWatch | None = None) -> None:
        self.settings = settings
        self.memory = MemoryBackend()
        self.redis = RedisBackend(redis) if redis is not None else None
        self.watch = watch if watch is not None else RedisWatch(redis)
        self.fail_closed = settings.failure_mode == "fail_closed"
        self.redis_failures = 0  # decisions taken in process because Redis failed
        self.on_redis_failure: Callable[[], None] | None = None  # counted in metrics

    # ------------------------------------------------------------ rules

    def rules(self, principal: Principal, model: ModelSettings, tokens: int) -> tuple[Rule, ...]:
        s = self.settings
        rules: list[Rule] = []

        def add(key: str, scope: Any, rpm: int | None, tpm: int | None) -> None:
            if rpm is not None:
                rules.append(Rule(key + ":r", scope, "requests", rpm, 1))
            if tpm is not None:
                rules.append(Rule(key + ":t", scope, "tokens", tpm, tokens))

        if principal.key_id is not None:
            add("k:" + principal.key_id, "key",
                principal.key_rpm if principal.key_rpm is not None else s.default_key.rpm,
                principal.key_tpm if principal.key_tpm is not None else s.default_key.tpm)
        if principal.user_id is not None:
            add("u:" + principal.user_id, "user",
                principal.user_rpm if principal.user_rpm is not None else s.default_user.rpm,
                principal.user_tpm if principal.user_tpm is not None else s.default_user.tpm)
        add("m:" + model.name, "model", model.rpm, model.tpm)
        add("g", "global", s.global_.rpm, s.global_.tpm)
        return tuple(rules)

    # -------------------------------------------------------- admission

    async def admit(self, principal: Principal, model: ModelSettings, tokens: int) -> Admission | None:
        """Take the request's share of every limit that applies, all or
        nothing. ``None`` when no limit applies; a refused admission names
        the first limit that refused it (``error()`` is its 429)."""
        rules = self.rules(principal, model, tokens)
        if not rules:
            return None
        backend, decision = await self._decide(rules)
        admission = Admission(rules, decision.states, tokens, backend, decision.allowed)
        if not decision.allowed:
            admission.retry_after_s = max(1, math.ceil(decision.retry_after_us / 1e6))
            for rule, state in zip(rules, decision.states, strict=True):
                if state.remaining < admission_cost(rule.cost, rule.limit):
                    admission.refused_scope = rule.scope
                    break
        return admission

    async def _decide(self, rules: tuple[Rule, ...]) -> tuple[Backend, Decision]:
        if self.redis is not None:
            if self.watch.up:
                try:
                    return self.redis, await self.redis.decide(rules)
                except Exception as exc:
                    self._redis_failed(exc)
            else:
                self._count_failure()
            if self.fail_closed:
                raise ServiceUnavailable(
                    "Rate limits cannot be checked right now; try again shortly.",
                    code="rate_limiter_unavailable",
                )
        return self.memory, self.memory.decide_now(rules)

    def _count_failure(self) -> None:
        self.redis_failures += 1
        if self.on_redis_failure is not None:
            self.on_redis_failure()

    def _redis_failed(self, exc: Exception) -> None:
        """Count the failure and leave Redis alone until it answers again."""
        self._count_failure()
        self.watch.lost("rate limiter", type(exc).__name__)

    # ------------------------------------------------------- correction

    def correct(self, admission: Admission, used_tokens: int) -> None:
        """Replace the admitted token estimate with the real usage: at once in
        memory, within a few milliseconds on Redis (the answer has already
        gone)."""
        delta = used_tokens - admission.tokens
        if delta == 0:
            return
        rules = tuple(r for r in admission.rules if r.unit == "tokens")
        if rules:
            admission.backend.correct(rules, (delta,) * len(rules))

    async def drain(self) -> None:
        """Send the corrections not yet on Redis (graceful shutdown)."""
        if self.redis is not None:
            await self.redis.drain()
