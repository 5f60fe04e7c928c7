"""The routing pieces on their own: the circuit breaker's state machine, the
backoff, which failures are retried, the balancing strategies, and
``Router.run``'s attempts, retries and fallbacks against scripted
deployments (no network)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from llm_gateway.errors import (
    GatewayError,
    InvalidRequest,
    NoHealthyDeployment,
    UpstreamAuthRejected,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    upstream_status_error,
)
from llm_gateway.routing.balancer import Stats, by_weight, least_busy, lowest_latency
from llm_gateway.routing.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, Window
from llm_gateway.routing.retry import ELSEWHERE, FINAL, RETRY, Backoff, verdict
from llm_gateway.routing.router import Route, Router
from llm_gateway.settings import ModelSettings, RoutingSettings

# ------------------------------------------------------------------ breaker


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    b = CircuitBreaker("p/m", threshold=3, cooldown_s=10)
    b.failed(False, 0)
    b.failed(False, 0)
    b.succeeded(False)  # a success breaks the run
    b.failed(False, 1)
    b.failed(False, 1)
    assert b.state(1) == CLOSED and b.failures == 2
    b.failed(False, 1)
    assert b.state(1) == OPEN and not b.may_trial(5)


def test_breaker_half_opens_for_one_trial_that_decides() -> None:
    b = CircuitBreaker("p/m", threshold=1, cooldown_s=10)
    b.failed(False, 0)
    assert b.state(9.9) == OPEN and not b.may_trial(9.9)
    assert b.state(10) == HALF_OPEN and b.may_trial(10)
    b.trial = True
    assert not b.may_trial(10), "only one trial at a time"
    b.failed(True, 12)  # the trial failed: open for another cooldown
    assert b.state(21) == OPEN and b.may_trial(22)
    b.trial = True
    b.succeeded(True)
    assert b.state(22) == CLOSED and b.failures == 0


def test_breaker_ignores_stray_results_while_open() -> None:
    b = CircuitBreaker("p/m", threshold=1, cooldown_s=10)
    b.failed(False, 0)
    b.succeeded(False)  # began before the circuit opened: not a trial
    assert b.state(1) == OPEN
    b.failed(False, 5)  # nor does a stray failure extend the cooldown
    assert b.may_trial(10)
    b.trial = True
    b.abandoned()  # the trial's client went away: another may try
    assert b.may_trial(10)


def test_breaker_adopts_shared_state_unless_its_own_write_is_pending() -> None:
    b = CircuitBreaker("p/m", threshold=5, cooldown_s=10)
    b.sync(7, True, 2_000, now=100)
    assert b.state(101) == OPEN and b.state(102) == HALF_OPEN
    b.sync(0, True, -2, now=101)  # cooldown over elsewhere: half-open here too
    assert b.state(101) == HALF_OPEN
    b.pending = 1
    b.sync(0, False, -2, now=101)
    assert b.state(101) == HALF_OPEN
    b.pending = 0
    b.sync(0, False, -2, now=101)
    assert b.state(101) == CLOSED


# ------------------------------------------------------------ retry policy


@pytest.mark.parametrize(("exc", "expected"), [
    (upstream_status_error(500, None), RETRY),
    (upstream_status_error(502, None), RETRY),
    (upstream_status_error(503, None), RETRY),
    (upstream_status_error(504, None), RETRY),
    (upstream_status_error(529, None), RETRY),
    (upstream_status_error(429, None, retry_after=1), RETRY),
    (UpstreamTimeout("t"), RETRY),
    (UpstreamError("connection refused"), RETRY),
    (upstream_status_error(401, None), ELSEWHERE),
    (upstream_status_error(403, None), ELSEWHERE),
    (upstream_status_error(400, "context too long"), FINAL),
    (upstream_status_error(404, None), FINAL),
    (upstream_status_error(422, None), FINAL),
    (InvalidRequest("no embeddings here"), FINAL),
])
def test_which_failures_are_retried(exc: GatewayError, expected: int) -> None:
    assert verdict(exc) == expected


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    backoff = Backoff(0.2, 10, random.Random(1))
    for tries, (low, high) in enumerate([(0.1, 0.2), (0.2, 0.4), (0.4, 0.8), (0.8, 1.6)], start=1):
        waits = [backoff.delay(tries, None) for _ in range(200)]
        assert all(w is not None and low <= w <= high for w in waits)
        assert len({round(w or 0, 6) for w in waits}) > 100, "jittered"
    assert backoff.delay(1, 3.0) == 3.0
    assert backoff.delay(20, None) == 10, "capped"
    assert backoff.delay(1, 10.5) is None, "a longer Retry-After is not waited for"


# ------------------------------------------------------------------ balancer


def _routes(weights: dict[str, float], strategy: str = "weighted") -> list[Route]:
    model = ModelSettings.model_validate({
        "name": "m", "strategy": strategy,
        "deployments": [{"provider": p, "model": "x", "weight": w} for p, w in weights.items()]})
    router = Router([model], {p: object() for p in weights})  # type: ignore[misc]
    return router._routes["m"]


def test_weighted_spreads_by_weight() -> None:
    routes = _routes({"a": 3, "b": 1, "c": 0.5})
    rng = random.Random(3)
    seen = Counter(by_weight(routes, rng).label for _ in range(20_000))
    for label, share in (("a/x", 3 / 4.5), ("b/x", 1 / 4.5), ("c/x", 0.5 / 4.5)):
        assert abs(seen[label] / 20_000 - share) < 0.02, seen


def test_least_busy_takes_the_fewest_in_flight_relative_to_weight() -> None:
    a, b = _routes({"a": 2, "b": 1})
    a.stats.in_flight, b.stats.in_flight = 3, 1
    assert least_busy([a, b], random.Random(0)) is b
    a.stats.in_flight = 1  # 1/2 < 1/1
    assert least_busy([a, b], random.Random(0)) is a
    a.stats.in_flight, b.stats.in_flight = 2, 1  # a tie: either
    assert {least_busy([a, b], random.Random(i)).label for i in range(50)} == {"a/x", "b/x"}


def test_lowest_latency_measures_everyone_then_prefers_the_fastest() -> None:
    a, b = _routes({"a": 1, "b": 1})
    rng = random.Random(5)
    assert lowest_latency([a, b], rng) in (a, b)
    a.stats.observe(0.5)
    assert lowest_latency([a, b], rng) is b, "an unmeasured deployment goes first"
    b.stats.observe(0.1)
    seen = Counter(lowest_latency([a, b], rng).label for _ in range(2000))
    assert seen["b/x"] > 0.9 * 2000 and seen["a/x"] > 0, "mostly the fastest, sometimes the other"
    b.stats.failed(0.001)  # failing fast does not look fast
    assert b.stats.latency > 0.1


def test_moving_average() -> None:
    s = Stats()
    s.observe(1.0)
    for _ in range(50):
        s.observe(0.2)
    assert abs(s.latency - 0.2) < 0.01


# ------------------------------------------------------------- Router.run

Script = dict[str, list[Any]]  # deployment label -> what each call does, in turn (repeats the last)


def _router(models: list[dict[str, Any]], **routing: Any) -> Router:
    settings = [ModelSettings.model_validate(m) for m in models]
    providers = {d.provider: object() for m in settings for d in m.deployments}
    return Router(settings, providers, RoutingSettings.model_validate(routing))  # type: ignore[arg-type]


def _scripted(script: Script, calls: list[str]) -> Callable[[Route], Any]:
    async def attempt(route: Route) -> str:
        calls.append(route.label)
        steps = script.get(route.label, ["ok"])
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, float):
            await asyncio.sleep(step)
            return "slow ok"
        return f"{step} from {route.label}"
    return attempt


def _run(router: Router, model: str, script: Script) -> tuple[Any, list[str]]:
    calls: list[str] = []

    async def main() -> Any:
        try:
            return await router.run(router.resolve(model), _scripted(script, calls))
        except GatewayError as exc:
            return exc

    return asyncio.run(main()), calls


TWO = {"name": "m", "deployments": [{"provider": "a", "model": "x"}, {"provider": "b", "model": "x"}]}


def test_a_retry_goes_to_another_deployment() -> None:
    router = _router([TWO], retries=2, backoff_base_s=0, circuit_breaker={"failure_threshold": 1000})
    for _ in range(20):
        result, calls = _run(router, "m", {"a/x": [UpstreamError("boom")], "b/x": [UpstreamError("boom")]})
        assert isinstance(result, UpstreamError)
        assert len(calls) == 3 and set(calls[:2]) == {"a/x", "b/x"}, calls


def test_at_most_retries_plus_one_attempts_then_the_last_error() -> None:
    router = _router([{**TWO, "deployments": TWO["deployments"][:1]}], retries=3, backoff_base_s=0)
    result, calls = _run(router, "m", {"a/x": [UpstreamError("1"), UpstreamTimeout("2"), UpstreamError("3"),
                                              UpstreamRateLimited("4")]})
    assert isinstance(result, UpstreamRateLimited) and calls == ["a/x"] * 4
    router = _router([{**TWO, "deployments": TWO["deployments"][:1]}], retries=0)
    result, calls = _run(router, "m", {"a/x": [UpstreamError("1")]})
    assert isinstance(result, UpstreamError) and calls == ["a/x"]


def test_success_after_failures() -> None:
    router = _router([{**TWO, "deployments": TWO["deployments"][:1]}], retries=2, backoff_base_s=0)
    result, calls = _run(router, "m", {"a/x": [UpstreamError("1"), UpstreamTimeout("2"), "ok"]})
    assert result == "ok from a/x" and len(calls) == 3


def test_a_request_error_is_not_retried_nor_sent_to_fallbacks() -> None:
    router = _router([TWO, {"name": "f", "deployments": [{"provider": "c", "model": "y"}]},
                      {**TWO, "name": "g", "fallbacks": ["f"]}], retries=2)
    result, calls = _run(router, "g", {"a/x": [UpstreamRejected("too long", status=400)],
                                       "b/x": [UpstreamRejected("too long", status=400)]})
    assert isinstance(result, UpstreamRejected) and len(calls) == 1


def test_a_rejected_key_is_not_asked_again() -> None:
    router = _router([{**TWO, "deployments": TWO["deployments"][:1]}], retries=2, backoff_base_s=0)
    result, calls = _run(router, "m", {"a/x": [UpstreamAuthRejected("bad key")]})
    assert isinstance(result, UpstreamAuthRejected) and calls == ["a/x"]
    router = _router([TWO], retries=2, backoff_base_s=0)
    for _ in range(10):
        result, calls = _run(router, "m", {"a/x": [UpstreamAuthRejected("bad key")]})
        assert result == "ok from b/x"


def test_fallbacks_in_order_after_the_models_own_deployments() -> None:
    models = [{"name": "main", "deployments": [{"provider": "a", "model": "x"}], "fallbacks": ["f1", "f2"]},
              {"name": "f1", "deployments": [{"provider": "b", "model": "y"}]},
              {"name": "f2", "deployments": [{"provider": "c", "model": "z"}]}]
    router = _router(models, retries=1, backoff_base_s=0)
    result, calls = _run(router, "main", {"a/x": [UpstreamError("down")], "b/y": [UpstreamTimeout("slow")]})
    assert result == "ok from c/z"
    assert calls == ["a/x", "a/x", "b/y", "b/y", "c/z"], "each model of the chain gets retries + 1 attempts"
    assert [m.name for m in router.chain(router.resolve("main"))] == ["main", "f1", "f2"]


def test_open_circuits_are_skipped_and_all_open_is_503_without_a_call() -> None:
    models = [{"name": "main", "deployments": [{"provider": "a", "model": "x"}], "fallbacks": ["f1"]},
              {"name": "f1", "deployments": [{"provider": "b", "model": "y"}]}]
    router = _router(models, retries=0, circuit_breaker={"failure_threshold": 2, "cooldown_s": 60})
    for _ in range(2):
        result, calls = _run(router, "main", {"a/x": [UpstreamError("down")]})
        assert result == "ok from b/y" and calls == ["a/x", "b/y"]
    assert router.circuit_states() == {"a/x": OPEN, "b/y": CLOSED}
    result, calls = _run(router, "main", {})
    assert result == "ok from b/y" and calls == ["b/y"], "the open deployment is skipped"
    for _ in range(2):
        _run(router, "f1", {"b/y": [UpstreamError("down")]})
    result, calls = _run(router, "main", {})
    assert isinstance(result, NoHealthyDeployment) and calls == []
    assert result.status_code == 503 and result.code == "no_healthy_deployment"
    assert 55 < int(result.response_headers()["retry-after"]) <= 60, "until the first trial is due"


def test_half_open_lets_one_trial_through() -> None:
    router = _router([{"name": "m", "deployments": [{"provider": "a", "model": "x"}]}], retries=0,
                     circuit_breaker={"failure_threshold": 1, "cooldown_s": 0.05})
    _run(router, "m", {"a/x": [UpstreamError("down")]})
    assert router.circuit_states() == {"a/x": OPEN}

    async def main() -> list[Any]:
        await asyncio.sleep(0.06)
        calls: list[str] = []
        attempt = _scripted({"a/x": [0.05]}, calls)
        model = router.resolve("m")
        results = await asyncio.gather(*(router.run(model, attempt) for _ in range(5)), return_exceptions=True)
        return [calls, results]

    calls, results = asyncio.run(main())
    assert calls == ["a/x"], "one trial"
    assert sorted(type(r).__name__ for r in results) == ["NoHealthyDeployment"] * 4 + ["str"]
    assert router.circuit_states() == {"a/x": CLOSED}


def test_retry_after_is_waited_for_on_the_same_deployment() -> None:
    router = _router([{"name": "m", "deployments": [{"provider": "a", "model": "x"}]}], retries=1,
                     backoff_base_s=0, max_retry_wait_s=1)
    times: list[float] = []

    async def main() -> Any:
        loop = asyncio.get_running_loop()

        async def attempt(route: Route) -> str:
            times.append(loop.time())
            if len(times) == 1:
                raise UpstreamRateLimited("slow down", retry_after=0.3)
            return "ok"

        return await router.run(router.resolve("m"), attempt)

    assert asyncio.run(main()) == "ok"
    assert times[1] - times[0] >= 0.3
    # Longer than max_retry_wait_s: not waited for; the client gets the 429 (with its Retry-After).
    result, calls = _run(router, "m", {"a/x": [UpstreamRateLimited("slow down", retry_after=30)]})
    assert isinstance(result, UpstreamRateLimited) and result.retry_after == 30 and calls == ["a/x"]


def test_a_cancelled_trial_gives_the_trial_back() -> None:
    router = _router([{"name": "m", "deployments": [{"provider": "a", "model": "x"}]}], retries=0,
                     circuit_breaker={"failure_threshold": 1, "cooldown_s": 0.01})
    _run(router, "m", {"a/x": [UpstreamError("down")]})

    async def main() -> None:
        await asyncio.sleep(0.02)
        task = asyncio.create_task(router.run(router.resolve("m"), _scripted({"a/x": [5.0]}, [])))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    route = router._routes["m"][0]
    assert route.breaker.may_trial(route.breaker.open_until) and route.stats.in_flight == 0


# ------------------------------------------------------------------ logs


def _fields(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if getattr(r, "fields", {}).get("event") == event]  # type: ignore[attr-defined]


def test_each_failed_attempt_is_logged_once_with_its_number_model_and_cause(caplog: pytest.LogCaptureFixture) -> None:
    models = [{"name": "main", "deployments": [{"provider": "a", "model": "x"}], "fallbacks": ["f1"]},
              {"name": "f1", "deployments": [{"provider": "b", "model": "y"}]}]
    router = _router(models, retries=1, backoff_base_s=0, circuit_breaker={"failure_threshold": 1000})
    with caplog.at_level("INFO", logger="llm_gateway.routing"):
        result, calls = _run(router, "main", {
            "a/x": [UpstreamError("Could not connect.", cause="connection refused"), UpstreamTimeout("slow")],
            "b/y": [UpstreamError("The b provider answered with an unexpected body."), "ok"]})
    assert result == "ok from b/y" and calls == ["a/x", "a/x", "b/y", "b/y"]
    failed = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "upstream_attempt_failed"]
    assert [r.levelname for r in failed] == ["WARNING"] * 3
    assert [r.getMessage() for r in failed] == [
        "attempt 1 for model 'main' on a/x (?) failed: connection refused",
        "attempt 2 for model 'main' on a/x (?) failed: slow",  # no cause found: the message says it
        "attempt 3 for model 'main' (fallback 'f1') on b/y (?) failed: "
        "The b provider answered with an unexpected body.",
    ]
    assert [(f["model"], f["served_by_model"], f["deployment"], f["attempt"]) for f in _fields(
        caplog, "upstream_attempt_failed")] == [("main", "main", "a/x", 1), ("main", "main", "a/x", 2),
                                                 ("main", "f1", "b/y", 3)]


def test_a_refusal_of_the_request_itself_is_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    router = _router([{"name": "m", "deployments": [{"provider": "a", "model": "x"}]}], retries=2)
    with caplog.at_level("INFO", logger="llm_gateway.routing"):
        _run(router, "m", {"a/x": [UpstreamRejected("too long", status=400, cause="HTTP 400: too long")]})
    [record] = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "upstream_attempt_failed"]
    assert record.levelname == "INFO" and record.getMessage().endswith("failed: HTTP 400: too long")


def test_the_breaker_logs_why_it_opens_its_trial_and_its_closing(caplog: pytest.LogCaptureFixture) -> None:
    b = CircuitBreaker("p/m", threshold=2, cooldown_s=29.5)
    with caplog.at_level("INFO", logger="llm_gateway.routing"):
        b.failed(False, 0, "connection refused")
        assert not caplog.records, "one failure of two: nothing to say yet"
        b.failed(False, 0, "connection refused")
        b.start_trial()
        b.failed(True, 30, "timed out (connect)")
        b.start_trial()
        b.succeeded(True)
        b.sync(3, True, 12_300, now=70)  # another process's failures open it again
        b.sync(0, False, -2, now=71)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "circuit of p/m opened: 2 consecutive failures (last: connection refused); next trial in 30 s"),
        ("INFO", "circuit of p/m half-open: cooldown over; one trial request is let through"),
        ("WARNING", "circuit of p/m opened: its trial request failed (last: timed out (connect)); "
                    "next trial in 30 s"),
        ("INFO", "circuit of p/m half-open: cooldown over; one trial request is let through"),
        ("INFO", "circuit of p/m closed: its trial request succeeded"),
        ("WARNING", "circuit of p/m opened by another process's failures; next trial in 13 s"),
        ("INFO", "circuit of p/m closed: another process's trial request succeeded"),
    ]
    assert [f["event"] for f in _fields(caplog, "circuit_open")] == ["circuit_open"] * 3
    assert {f["deployment"] for f in _fields(caplog, "circuit_closed")} == {"p/m"}


def test_all_circuits_open_says_when_the_next_trial_is() -> None:
    router = _router([{"name": "m", "deployments": [{"provider": "a", "model": "x"}]}], retries=0,
                     circuit_breaker={"failure_threshold": 1, "cooldown_s": 30})
    _run(router, "m", {"a/x": [UpstreamError("down")]})
    result, calls = _run(router, "m", {})
    assert isinstance(result, NoHealthyDeployment) and calls == []
    wait = result.response_headers()["retry-after"]
    assert 1 <= int(wait) <= 30
    assert result.message == (f"All deployments of 'm' are unavailable (circuit open); the next trial is in {wait} s.")


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(("text", "field"), [
    ("strategy: fastest", "models.0.strategy"),
    ("first_byte_timeout_s: 0", "models.0.first_byte_timeout_s"),
    ("idle_timeout_s: -1", "models.0.idle_timeout_s"),
])
def test_bad_routing_settings_name_the_field(tmp_path: Any, text: str, field: str) -> None:
    from llm_gateway.settings import ConfigError, load_settings

    path = tmp_path / "gateway.yaml"
    path.write_text(f"models:\n  - name: m\n    deployments: [{{provider: mock, model: mock}}]\n    {text}\n")
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_settings(path, env={})


# ------------------------------------------------------- error-rate breaker


def test_the_window_counts_the_last_window_s_slice_by_slice() -> None:
    w = Window(10.0)  # ten slices of 1 s
    for t in (100.0, 100.5, 101.2):
        w.add(t, False)
    w.add(101.9, True)
    assert (w.calls, w.failures) == (4, 1)
    w.add(109.0, True)  # slice 109: 100 … 109 all within the window
    assert (w.calls, w.failures) == (5, 2)
    w.add(110.0, False)  # slice 110: slice 100 (two calls) has slid out
    assert (w.calls, w.failures) == (4, 2)
    w.add(111.5, False)  # slice 101 (one call, one failure) too
    assert (w.calls, w.failures) == (3, 1)
    w.add(108.0, True)  # a clock read late: counted in the newest slice
    assert (w.calls, w.failures) == (4, 2)
    w.add(130.0, False)  # a whole window later: only this one
    assert (w.calls, w.failures) == (1, 0)
    w.clear()
    assert (w.calls, w.failures) == (0, 0)


def _rate_breaker(trials: int = 3) -> CircuitBreaker:
    return CircuitBreaker("p/m", threshold=20, cooldown_s=30, trials=trials, failure_rate=0.5, min_calls=20,
                          window_s=30)


def test_the_rate_opens_it_not_a_few_failures_among_many_successes() -> None:
    b = _rate_breaker()
    for i in range(200):  # one failure in three, interleaved: never opens
        if i % 3 == 0:
            b.failed(False, i * 0.1)
        else:
            b.succeeded(False, i * 0.1)
    assert b.closed
    b = _rate_breaker()
    for _ in range(9):
        b.failed(False, 0.0)
        b.succeeded(False, 0.0)
    b.failed(False, 0.0)
    assert b.closed, "10 failures of 19 attempts: fewer than min_calls"
    assert b.failed(False, 0.0) and not b.closed, "11 of 20: open"
    assert b.state(29.9) == OPEN and b.may_trial(30.0)


def test_old_failures_slide_out_of_the_window() -> None:
    b = _rate_breaker()
    for _ in range(9):
        b.failed(False, 0.0)
        b.succeeded(False, 0.0)  # (a success between: no run of failures)
    b.succeeded(False, 31.0)
    b.failed(False, 31.0)  # 10 of 20 had they all counted
    assert b.closed and b.window is not None and (b.window.calls, b.window.failures) == (2, 1)


def test_a_run_of_min_calls_failures_opens_it_however_slow() -> None:
    b = _rate_breaker()
    for i in range(19):
        assert not b.failed(False, i * 60.0), "one failure a minute: no window fills"
    assert b.failed(False, 19 * 60.0) and not b.closed


def test_half_open_needs_its_trials_in_turn_and_one_failure_reopens() -> None:
    b = _rate_breaker(trials=3)
    for _ in range(20):
        b.failed(False, 0.0)
    assert not b.closed
    for passed in (1, 2):
        assert b.may_trial(30.0)
        b.start_trial()
        assert not b.may_trial(30.0), "one trial at a time"
        b.succeeded(True, 30.0)
        assert not b.closed and b.passed == passed
    b.start_trial()
    b.failed(True, 31.0)  # the third fails: open again, trials start over
    assert b.state(60.9) == OPEN and b.passed == 0
    for _ in range(3):
        b.start_trial()
        b.succeeded(True, 61.0)
    assert b.closed and b.window is not None and b.window.calls == 0


def test_settings_keep_failure_threshold_consecutive() -> None:
    from llm_gateway.settings import CircuitBreakerSettings

    assert CircuitBreakerSettings().mode == "error_rate"
    legacy = CircuitBreakerSettings.model_validate({"failure_threshold": 2})
    assert (legacy.mode, legacy.half_open_trials) == ("consecutive", 1)
    assert CircuitBreakerSettings.model_validate({"failure_threshold": 2, "half_open_trials": 2}).half_open_trials == 2
    with pytest.raises(ValueError, match="failure_threshold applies to mode: consecutive"):
        CircuitBreakerSettings.model_validate({"mode": "error_rate", "failure_threshold": 2})
    router = _router([TWO])  # the defaults: error rate
    breaker = router._routes["m"][0].breaker
    assert breaker.window is not None and (breaker.threshold, breaker.trials) == (20, 3)


THREE = {"name": "m3", "deployments": [{"provider": p, "model": "x"} for p in "abc"]}


def _open(router: Router, *labels: str) -> None:
    for route in router._routes["m3"]:
        if route.label in labels:
            route.breaker.failed(True, time.monotonic())  # (a failed trial opens it at once)


def test_panic_spreads_the_traffic_over_open_circuits_below_the_threshold() -> None:
    router = _router([THREE], retries=0)
    panics: list[str] = []
    router.on_panic = panics.append
    _open(router, "a/x")  # two of three closed: not in panic
    seen = Counter(_run(router, "m3", {})[1][0] for _ in range(60))
    assert set(seen) == {"b/x", "c/x"} and not panics
    _open(router, "b/x")  # one of three closed: all three again
    seen = Counter(_run(router, "m3", {})[1][0] for _ in range(90))
    assert set(seen) == {"a/x", "b/x", "c/x"} and len(panics) == 90 and set(panics) == {"m3"}
    assert router.circuit_states()["a/x"] == OPEN, "results while open move nothing"
    _open(router, "c/x")  # none closed, no fallback: still served
    result, calls = _run(router, "m3", {})
    assert result.startswith("ok from") and len(calls) == 1


def test_no_panic_for_one_deployment_with_fallbacks_or_with_threshold_0() -> None:
    solo = {"name": "solo", "deployments": [{"provider": "s", "model": "x"}]}
    router = _router([solo, {**THREE, "fallbacks": ["solo"]}], retries=0)
    _open(router, "a/x", "b/x", "c/x")
    result, calls = _run(router, "m3", {})
    assert result == "ok from s/x" and calls == ["s/x"], "the fallback serves first"
    router._routes["solo"][0].breaker.failed(True, time.monotonic())
    result, calls = _run(router, "m3", {})
    assert isinstance(result, NoHealthyDeployment) and calls == []
    router = _router([THREE], retries=0, circuit_breaker={"panic_threshold": 0})
    _open(router, "a/x", "b/x", "c/x")
    result, calls = _run(router, "m3", {})
    assert isinstance(result, NoHealthyDeployment) and calls == []
