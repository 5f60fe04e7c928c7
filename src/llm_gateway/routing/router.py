"""Model resolution, and where each attempt of a request goes.

A ``Route`` is one concrete target: the model entry that owns it, the
deployment, the provider adapter that serves it, and the deployment's
circuit breaker and load figures (shared by every model routed to the same
``<provider>/<model>``).

``Router.run`` makes the attempts of one request (SPEC §8 "Retries",
"Fallbacks", "Circuit breaker"): the model's deployments first, chosen by the
model's strategy, skipping open circuits and preferring one not yet tried;
then, once they have failed or none is left, each fallback in turn. Each
model of that chain gets at most ``retries + 1`` attempts. When fewer than
``panic_threshold`` of a model's deployments (two or more) have a closed
circuit, its attempts go to all of them again, open or not (Envoy's panic
mode), so a flaky provider never shuts a whole model out; a single
deployment, or a model whose circuits are all open and that has fallbacks,
is not panicked for (the fallbacks serve, SPEC §8). A retry of a
deployment already tried waits for the backoff (at least its Retry-After);
a move to another deployment does not wait. A failure that no deployment
would answer differently (a provider's 4xx about the request) ends the
request at once. When no attempt could be made at all, because every
circuit is open, the request gets 503 ``no_healthy_deployment``, with the
seconds until the next trial in its message and ``Retry-After``.

One deadline bounds all of a request's attempts (``Router.timeout_s``; SPEC
§2 ``routing.request_timeout_s``): each attempt is cut when it passes (504
``upstream_timeout``, and no verdict on the deployment: a client in a hurry
says nothing of its health), and no retry or fallback starts, nor backoff
wait, that would leave less than ``MIN_ATTEMPT_S`` of it; the request then
gets its last failure.

Each failed attempt is logged once, here (``llm_gateway.routing``, warning;
info when the provider refused the request itself), naming the client's
model, the deployment, the provider's kind and address (scheme, host and
port only) and the attempt's number, with the cause the adapter found
("connection refused", "timed out (connect)", "HTTP 503: …"); the same as
JSON fields.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from llm_gateway.errors import GatewayError, ModelNotFound, NoHealthyDeployment, UpstreamTimeout
from llm_gateway.providers import causes
from llm_gateway.providers.base import REQUEST_DEADLINE, Provider, Target, Timeouts
from llm_gateway.routing.balancer import STRATEGIES, Stats
from llm_gateway.routing.breaker import CircuitBreaker
from llm_gateway.routing.retry import ELSEWHERE, FINAL, RETRY, Backoff, verdict
from llm_gateway.routing.shared import TRIAL, SharedBreakers
from llm_gateway.settings import CircuitBreakerSettings, Deployment, ModelSettings, RoutingSettings

log = logging.getLogger("llm_gateway.routing")

T = TypeVar("T")
# Whether the stream ``run(…, hold=True)`` just opened is a trial: ``track``,
# called next in the same task, needs it to judge the stream's end.
_HELD_TRIAL: ContextVar[bool] = ContextVar("llm_gateway_held_trial", default=False)
# The least of a request's deadline worth starting another attempt with: less
# is hardly time to connect and be answered, and would only load the upstream.
MIN_ATTEMPT_S = 0.5


@dataclass(slots=True, frozen=True)
class Route:
    model: ModelSettings
    deployment: Deployment
    provider: Provider
    target: Target
    label: str  # ``<provider name>/<upstream model>``, as in ``x-gateway-deployment``
    breaker: CircuitBreaker
    stats: Stats
    kind: str = ""  # the provider's kind, for the log
    address: str = ""  # ``scheme://host:port`` of the provider, for the log ("" when it has none)


def _timeouts(model: ModelSettings) -> Timeouts | None:
    """The model's overrides of its providers' timeouts, if it has any."""
    t = Timeouts(model.timeout_s, model.connect_timeout_s, model.first_byte_timeout_s, model.idle_timeout_s)
    return None if t == Timeouts() else t


class _Status(Protocol):
    status: int  # the status the client got (a failure after the first byte sets it)


class Router:
    """Resolves client model names and runs each request's attempts."""

    def __init__(
        self, models: list[ModelSettings], providers: Mapping[str, Provider],
        routing: RoutingSettings | None = None, redis: Any | None = None,
    ) -> None:
        routing = routing or RoutingSettings()
        cb = routing.circuit_breaker
        self._models = {m.name: m for m in models}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._stats: dict[str, Stats] = {}
        self._routes: dict[str, list[Route]] = {}
        for m in models:
            timeouts = _timeouts(m)
            routes = []
            for d in m.deployments:
                label = f"{d.provider}/{d.model}"
                breaker = self._breakers.get(label) or self._breakers.setdefault(label, _breaker(label, cb))
                stats = self._stats.setdefault(label, Stats())
                target = Target(d.model, m.max_output_tokens, timeouts)
                provider = providers[d.provider]
                # (A provider without an HTTP upstream, such as the mock, has no address.)
                kind, address = getattr(provider, "kind", ""), getattr(provider, "address", "")
                routes.append(Route(m, d, provider, target, label, breaker, stats, kind, address))
            self._routes[m.name] = routes
        self._chains = {m.name: [m, *(self._models[f] for f in m.fallbacks)] for m in models}
        self._pickers = {m.name: STRATEGIES[m.strategy] for m in models}
        # Each model's deadline: (non-streamed, streamed).
        self._timeouts_s = {
            m.name: (m.request_timeout_s or routing.request_timeout_s,
                     m.stream_request_timeout_s or routing.stream_request_timeout_s)
            for m in models
        }
        self._attempts = routing.retries + 1
        # The mock fails only when a caller asks it to (``mock-error:…``): its
        # failures say nothing of its health, and one caller's must not open
        # its circuit for everyone.
        self._steered = {r.label for rs in self._routes.values() for r in rs if r.kind == "mock"}
        self._rng = random.Random()
        self._backoff = Backoff(routing.backoff_base_s, routing.max_retry_wait_s, self._rng)
        self.shared = (
            SharedBreakers(redis, self._breakers, cb.cooldown_s) if redis is not None else None
        )
        self._panic = cb.panic_threshold
        # Called with the model's name for each attempt routed in panic (the
        # observer counts them: gateway_routing_panic_total).
        self.on_panic: Callable[[str], None] = lambda model: None

    @property
    def models(self) -> Mapping[str, ModelSettings]:
        return self._models

    def resolve(self, name: str) -> ModelSettings:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist or you do not have access to it.", param="model"
            )
        return model

    def chain(self, model: ModelSettings) -> Sequence[ModelSettings]:
        """The model, then its fallbacks in order: every model that may serve it."""
        return self._chains[model.name]

    def timeout_s(self, model: ModelSettings, stream: bool, asked: float | None = None) -> float:
        """The request's time, from its first attempt to its answer (a stream's
        last byte): the model's, or routing's, or less if the client ``asked``
        for less (``x-gateway-timeout``)."""
        limit = self._timeouts_s[model.name][stream]
        return asked if asked is not None and asked < limit else limit

    def routes(self, model: ModelSettings) -> Sequence[Route]:
        """The model's own deployments, in configured order."""
        return self._routes[model.name]

    def circuit_states(self) -> dict[str, int]:
        """Deployment label → 0 closed, 1 half-open, 2 open, as this process sees it."""
        now = time.monotonic()
        return {label: b.state(now) for label, b in self._breakers.items()}

    def start(self) -> None:
        """Begin sharing breaker state (with Redis); from the app's lifespan."""
        if self.shared is not None:
            self.shared.start()

    async def aclose(self) -> None:
        if self.shared is not None:
            await self.shared.aclose()

    # ------------------------------------------------------------ attempts

    async def run(
        self, model: ModelSettings, attempt: Callable[[Route], Awaitable[T]], *, hold: bool = False,
        request_id: str | None = None, deadline: float | None = None,
    ) -> T:
        """The first successful ``attempt(route)``, or the last failure.

        With ``hold`` (a stream) the serving deployment stays in flight after
        success until ``track``'s stream is closed. ``deadline`` (the event
        loop's clock) bounds every attempt, and the stream's watchdog."""
        REQUEST_DEADLINE.set(deadline)
        last: GatewayError | None = None
        tries: dict[str, int] = {}  # attempts per deployment in this request
        errors: dict[str, GatewayError] = {}
        barred: set[str] = set()  # not to be asked again in this request
        number = 0  # attempts made in this request
        for m in self._chains[model.name]:
            routes = self._routes[m.name]
            made = 0
            while made < self._attempts:
                route = self._pick(m, routes, tries, barred)
                if route is None:
                    break
                label = route.label
                if label in tries:
                    wait = self._backoff.delay(tries[label], errors[label].retry_after)
                    if wait is None:
                        barred.add(label)
                        continue
                    if _left(deadline) - wait < MIN_ATTEMPT_S:
                        assert last is not None  # (a deployment tried has failed)
                        raise last
                    await asyncio.sleep(wait)
                elif number and _left(deadline) < MIN_ATTEMPT_S:
                    assert last is not None
                    raise last
                trial = False
                breaker = route.breaker
                if not breaker.closed:  # half-open: this attempt may be the trial; or a panic
                    if breaker.may_trial(time.monotonic()):
                        trial = await self._claim_trial(breaker)
                    if not trial and not breaker.closed and not self._panicking(m, routes):
                        barred.add(label)
                        continue
                made += 1
                number += 1
                tries[label] = tries.get(label, 0) + 1
                timer = asyncio.timeout_at(deadline)
                try:
                    async with timer:
                        return await self._attempt(route, attempt, trial, hold)
                except TimeoutError:
                    if not timer.expired():
                        raise
                    exc = UpstreamTimeout("The provider did not answer within the request's deadline.",
                                          cause=causes.timed_out("request deadline"))
                    _log_failure(model, route, number, exc, RETRY, request_id)
                    raise exc from None
                except GatewayError as exc:
                    kind = verdict(exc)
                    _log_failure(model, route, number, exc, kind, request_id)
                    if kind == FINAL:
                        raise
                    last = errors[label] = exc
                    if kind == ELSEWHERE:
                        barred.add(label)
        if last is not None:
            raise last
        wait = self._next_trial(model)
        raise NoHealthyDeployment(
            f"All deployments of '{model.name}' are unavailable (circuit open); the next trial is in {wait} s.",
            retry_after=wait,
        )

    def _next_trial(self, model: ModelSettings) -> int:
        """Whole seconds (at least 1) until the first of the chain's open
        circuits is due a trial."""
        now = time.monotonic()
        due = [r.breaker.open_until - now for m in self._chains[model.name] for r in self._routes[m.name]
               if not r.breaker.closed]
        return max(1, math.ceil(min(due, default=1.0)))

    def _pick(
        self, model: ModelSettings, routes: list[Route], tries: dict[str, int], barred: set[str]
    ) -> Route | None:
        """A deployment that may be called: not barred, circuit closed or due a
        trial; one not yet tried in this request when there is one."""
        if not tries and not barred:  # a first attempt with every circuit closed: the common case
            if len(routes) == 1:
                route = routes[0]
                return route if route.breaker.closed or route.breaker.may_trial(time.monotonic()) else None
            for route in routes:
                if not route.breaker.closed:
                    break
            else:
                return self._pickers[model.name](routes, self._rng)
        now = time.monotonic()
        if self._panicking(model, routes):
            usable = [r for r in routes if r.label not in barred]
            if usable:
                self.on_panic(model.name)
        else:
            usable = [r for r in routes if r.label not in barred and (r.breaker.closed or r.breaker.may_trial(now))]
        if not usable:
            return None
        fresh = [r for r in usable if r.label not in tries]
        candidates = fresh or usable
        return candidates[0] if len(candidates) == 1 else self._pickers[model.name](candidates, self._rng)

    def _panicking(self, model: ModelSettings, routes: list[Route]) -> bool:
        """Too few of the model's deployments are closed to carry its traffic:
        open circuits are ignored. Only off the common path (some circuit of
        the model is not closed)."""
        if len(routes) < 2 or self._panic <= 0:
            return False
        closed = sum(1 for r in routes if r.breaker.closed)
        if closed >= self._panic * len(routes):
            return False
        # Every circuit open and a fallback configured: the fallback serves first.
        return closed > 0 or not model.fallbacks

    async def _claim_trial(self, breaker: CircuitBreaker) -> bool:
        if self.shared is not None:
            claimed = await self.shared.claim_trial(breaker)
            if claimed is not None:  # (another process's trial may have closed it: no trial then)
                if claimed == TRIAL:
                    breaker.start_trial()
                return claimed == TRIAL
        if breaker.may_trial(time.monotonic()):
            breaker.start_trial()
            return True
        return False

    async def _attempt(self, route: Route, attempt: Callable[[Route], Awaitable[T]], trial: bool, hold: bool) -> T:
        stats = route.stats
        stats.in_flight += 1
        started = time.perf_counter()
        try:
            result = await attempt(route)
        except GatewayError as exc:
            stats.in_flight -= 1
            if verdict(exc) == FINAL:  # the deployment answered: it is up
                self._succeeded(route.breaker, trial)
            else:
                stats.failed(time.perf_counter() - started)
                self._failed(route.breaker, trial, exc.cause or exc.message)
            raise
        except BaseException:  # cancelled (the client went away): no verdict
            stats.in_flight -= 1
            if trial:
                route.breaker.abandoned()
                if self.shared is not None:
                    self.shared.abandoned(route.breaker)
            raise
        stats.observe(time.perf_counter() - started)
        if hold:
            # A stream is judged when it ends (``track``): one that opens and
            # then breaks has failed. A trial is judged now, so that a stream
            # never closed cannot hold the trial for ever; its breaking later
            # still opens the circuit again.
            _HELD_TRIAL.set(trial)
            if trial:
                self._succeeded(route.breaker, trial)
            return result
        self._succeeded(route.breaker, trial)
        stats.in_flight -= 1
        return result

    def _succeeded(self, breaker: CircuitBreaker, trial: bool) -> None:
        if not trial and breaker.failures == 0:
            if breaker.window is not None and breaker.closed:  # (error rate: every result counts)
                breaker.window.add(time.monotonic(), False)
            return  # nothing the shared state needs to hear
        breaker.succeeded(trial, time.monotonic())
        if self.shared is not None:
            self.shared.succeeded(breaker, trial)

    def _failed(self, breaker: CircuitBreaker, trial: bool, cause: str | None = None) -> None:
        if breaker.label in self._steered:
            return
        opened = breaker.failed(trial, time.monotonic(), cause)
        if self.shared is not None:
            self.shared.failed(breaker, trial, opened)

    def track(self, events: AsyncIterator[T], route: Route, call: _Status) -> AsyncIterator[T]:
        """The stream served by ``route`` (opened with ``run(…, hold=True)``),
        which leaves flight when closed; a failure after its first byte counts
        against the deployment's circuit, though it cannot be retried, and a
        stream that ends well counts as a success."""
        return _Tracked(events, route, call, self, _HELD_TRIAL.get())


def _left(deadline: float | None) -> float:
    """Seconds left before ``deadline`` (none: no end)."""
    return math.inf if deadline is None else deadline - asyncio.get_running_loop().time()


def _breaker(label: str, cb: CircuitBreakerSettings) -> CircuitBreaker:
    if cb.mode == "consecutive":
        return CircuitBreaker(label, cb.failure_threshold, cb.cooldown_s, cb.half_open_trials)
    # A run of min_calls failures opens it too, however long it took: a
    # deployment that is down and gets little traffic would never fill a window.
    return CircuitBreaker(label, cb.min_calls, cb.cooldown_s, cb.half_open_trials, cb.failure_rate, cb.min_calls,
                          cb.window_s)


def _log_failure(
    model: ModelSettings, route: Route, number: int, exc: GatewayError, kind: int, request_id: str | None
) -> None:
    """The one log line of a failed attempt. A provider's refusal of the
    request itself (``FINAL``) is the client's to fix: info, not warning."""
    cause = exc.cause or exc.message
    served = "" if route.model.name == model.name else f" (fallback '{route.model.name}')"
    where = f"{route.kind}, {route.address}" if route.address else route.kind or "?"
    log.log(
        logging.INFO if kind == FINAL else logging.WARNING,
        "attempt %d for model '%s'%s on %s (%s) failed: %s",
        number, model.name, served, route.label, where, cause,
        extra={"fields": {
            "event": "upstream_attempt_failed", "request_id": request_id, "model": model.name,
            "served_by_model": route.model.name,
            "deployment": route.label, "provider_kind": route.kind, "address": route.address or None,
            "attempt": number, "cause": cause, "status": exc.status_code,
        }},
    )


class _Tracked:
    """Passes a stream's events on untouched (no extra coroutine per chunk);
    only ``aclose`` does anything."""

    __slots__ = ("_call", "_events", "_route", "_router", "_trial")

    def __init__(self, events: AsyncIterator[Any], route: Route, call: _Status, router: Router, trial: bool) -> None:
        self._events = events
        self._route: Route | None = route
        self._call = call
        self._router = router
        self._trial = trial

    def __aiter__(self) -> _Tracked:
        return self

    def __anext__(self) -> Awaitable[Any]:
        return self._events.__anext__()

    async def aclose(self) -> None:
        try:
            await self._events.aclose()  # type: ignore[attr-defined]
        finally:
            route, self._route = self._route, None
            if route is not None:
                route.stats.in_flight -= 1
                status = self._call.status
                if status >= 500 or status == 429:
                    self._router._failed(route.breaker, self._trial, f"the stream broke after its first byte "
                                                                     f"(HTTP {status})")
                elif not self._trial:  # (a trial was judged when it opened)
                    self._router._succeeded(route.breaker, False)
