"""GCRA arithmetic and the in-process backend, on a controlled clock."""

from __future__ import annotations

import pytest

from llm_gateway.limits.backends import MemoryBackend
from llm_gateway.limits.gcra import PERIOD_US, Rule, corrected, decide, format_reset

S = 1_000_000.0  # one second in microseconds


def rpm(limit: int, key: str = "u:1:r") -> Rule:
    return Rule(key, "user", "requests", limit, 1)


def run(rules: tuple[Rule, ...], tats: list[float], now: float) -> tuple[bool, list[float], list[int]]:
    decision, new = decide(rules, tats, now)
    return decision.allowed, new, [s.remaining for s in decision.states]


@pytest.mark.parametrize("limit", [1, 7, 30, 60, 1000, 7919])
def test_a_burst_from_idle_admits_exactly_the_limit(limit: int) -> None:
    rules = (rpm(limit),)
    tats = [0.0]
    now = 1.7e15
    admitted, remaining = 0, []
    for _ in range(limit + 5):
        ok, tats, rem = run(rules, tats, now)
        admitted += ok
        remaining.append(rem[0])
    assert admitted == limit
    # remaining counts down exactly, and is 0 once refused
    assert remaining[:limit] == list(range(limit - 1, -1, -1))
    assert remaining[limit:] == [0] * 5


def test_refill_is_smooth_no_double_burst_at_a_minute_boundary() -> None:
    rules = (rpm(30),)  # one request every 2 s
    now = 1.7e15
    tats = [0.0]
    for _ in range(30):
        ok, tats, _ = run(rules, tats, now)
        assert ok
    # One minute later the bucket is full again, never more than full.
    for elapsed, expect in [(1.9, 0), (2.0, 1), (10.0, 5), (59.0, 29), (60.0, 30), (600.0, 30)]:
        t = list(tats)
        admitted = 0
        for _ in range(40):
            ok, t, _ = run(rules, t, now + elapsed * S)
            admitted += ok
        assert admitted == expect, (elapsed, admitted)


def test_all_or_nothing_across_rules_and_retry_after() -> None:
    user = rpm(10, "u:1:r")
    key = rpm(2, "k:1:r")
    tats = [0.0, 0.0]
    now = 1.7e15
    for _ in range(2):
        ok, tats, _ = run((user, key), tats, now)
        assert ok
    decision, new = decide((user, key), tats, now)
    assert not decision.allowed
    assert new == tats  # the user's limit was not charged for a refused request
    assert decision.retry_after_us == pytest.approx(30 * S)  # the key refills one request in 30 s
    assert [s.remaining for s in decision.states] == [8, 0]


def test_tokens_larger_than_the_limit_pass_against_a_full_bucket_then_pay_their_debt() -> None:
    big = Rule("u:1:t", "user", "tokens", 1000, 5000)
    ok, tats, rem = run((big,), [0.0], 1e15)
    assert ok and rem == [0]
    ok, _, _ = run((Rule("u:1:t", "user", "tokens", 1000, 1),), tats, 1e15 + S)
    assert not ok


def test_correction_adds_debt_or_gives_tokens_back_but_never_credit() -> None:
    now = 1e15
    tat = now + 30 * S  # half of a 1000 tpm bucket used
    assert corrected(tat, 1000, 100, now) == pytest.approx(tat + 100 * PERIOD_US / 1000)
    assert corrected(tat, 1000, -100, now) == pytest.approx(tat - 100 * PERIOD_US / 1000)
    assert corrected(tat, 1000, -10_000, now) == now


def test_memory_backend_prunes_full_buckets() -> None:
    backend = MemoryBackend(max_keys=10)
    for i in range(11):
        assert backend.decide_now((rpm(1000, f"u:{i}:r"),)).allowed
    assert len(backend._tats) == 11  # none is full again yet
    backend._tats = {k: 0.0 for k in backend._tats}
    assert backend.decide_now((rpm(1000, "u:new:r"),)).allowed
    assert len(backend._tats) == 1


@pytest.mark.parametrize(("us", "text"), [(0, "0s"), (84_000, "84ms"), (1 * S, "1s"), (1.5 * S, "1.5s"),
                                          (360 * S, "6m0s"), (61.25 * S, "1m1.25s")])
def test_reset_format_is_openais(us: float, text: str) -> None:
    assert format_reset(us) == text
