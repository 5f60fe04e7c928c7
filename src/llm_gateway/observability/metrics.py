"""Prometheus metrics (SPEC §7, §8): the ``gateway_`` families, recorded once
per request from ``Pipeline.finish`` and rendered by ``GET /metrics``.

One process: every gateway app keeps its own registry (several apps may run
in one process, as the tests do). Several worker processes: when
``PROMETHEUS_MULTIPROC_DIR`` is set, values live in that directory's mmapped
files and a scrape, answered by any worker, adds up every worker's files.

The per-request cost is a dict lookup for pre-resolved label children and
a few increments; nothing is allocated for a label set seen before.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from llm_gateway.types import Usage

# From a cached answer (milliseconds) to a long reasoning call (minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
CACHE_RESULTS = ("HIT", "MISS", "BYPASS")
LIMIT_SCOPES = ("key", "user", "model", "global")
UNKNOWN_MODEL = "unknown"


def multiprocess_dir() -> str | None:
    """The shared metrics directory when several workers serve, else None."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@dataclass(slots=True)
class _ModelChildren:
    duration: Histogram
    ttft: Histogram
    input: Counter
    cached_input: Counter
    output: Counter
    cost: Counter


@dataclass(slots=True)
class _Children:
    requests: Counter
    model: _ModelChildren


class Metrics:
    """The gateway's metric families and the per-request recording."""

    def __init__(self, known_models: Iterable[str], circuit_states: Callable[[], Mapping[str, int]] | None) -> None:
        self._known = frozenset(known_models)
        self._circuit_states = circuit_states
        # No ``*_created`` series: they double the output and no dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.multiprocess_path = multiprocess_dir()
        self.registry: CollectorRegistry | None = None
        if self.multiprocess_path is not None:
            # prometheus_client picks its value store when first imported; the
            # variable may have been set after that (serve sets it before
            # forking workers), so choose again now.
            if values.ValueClass.__name__ != "MmapedValue":
                values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        else:
            self.registry = CollectorRegistry(auto_describe=True)
            ProcessCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter("gateway_requests_total",
                                "Requests by model, deployment and the status the client got.",
                                ["model", "deployment", "status"], registry=r)
        self.duration = Histogram("gateway_request_duration_seconds", "Time from request to its last byte.",
                                  ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("gateway_time_to_first_token_seconds", "Streams: time from request to the first event.",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream = Histogram("gateway_upstream_duration_seconds", "Time spent on the provider call.",
                                  ["deployment"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("gateway_tokens_total",
                              "Tokens by model and kind; input includes cached_input (prompt tokens).",
                              ["model", "kind"], registry=r)
        self.cost = Counter("gateway_cost_usd_total", "Cost in USD from the provider's usage and the model's prices.",
                            ["model"], registry=r)
        self.cache = Counter("gateway_cache_requests_total", "Requests by response-cache result.", ["result"],
                             registry=r)
        self.rate_limited = Counter("gateway_rate_limited_total", "Requests refused by a rate limit, by scope.",
                                    ["scope"], registry=r)
        self.in_flight = Gauge("gateway_in_flight_requests", "/v1 requests being served now.",
                               multiprocess_mode="livesum", registry=r)
        self.langfuse_sent = Counter("gateway_langfuse_traces_sent_total", "Traces accepted by Langfuse.", registry=r)
        self.langfuse_dropped = Counter("gateway_langfuse_traces_dropped_total",
                                        "Traces not delivered to Langfuse, by reason.", ["reason"], registry=r)
        self.redis_fallbacks = Counter("gateway_redis_fallbacks_total",
                                       "Decisions taken without Redis because it failed, by component.",
                                       ["component"], registry=r)
        for component in ("limits", "cache"):
            self.redis_fallbacks.labels(component)
        self.log_lines_dropped = Counter("gateway_log_lines_dropped_total",
                                         "Request log lines dropped because standard output did not keep up.",
                                         registry=r)
        # Attempts sent to a model's deployments regardless of their circuits,
        # because too few of them were closed (routing's panic threshold).
        self.routing_panic = Counter("gateway_routing_panic_total",
                                     "Attempts routed in panic mode (too few healthy deployments), by model.",
                                     ["model"], registry=r)
        self._panic_children = {m: self.routing_panic.labels(m) for m in sorted(self._known)}
        self._cache_children = {result: self.cache.labels(result) for result in CACHE_RESULTS}
        self._limit_children = {scope: self.rate_limited.labels(scope) for scope in LIMIT_SCOPES}
        for reason in ("queue_full", "send_failed", "rejected"):
            self.langfuse_dropped.labels(reason)
        self._children: dict[tuple[str, str, int], _Children] = {}
        self._models: dict[str, _ModelChildren] = {}
        self._upstream: dict[str, Histogram] = {}
        self._extra = _Extra(self)
        if self.registry is not None:
            self.registry.register(self._extra)

    # ------------------------------------------------------------ recording

    def panicked(self, model: str) -> None:
        """An attempt for ``model`` (a configured one) routed in panic."""
        child = self._panic_children.get(model)
        if child is not None:
            child.inc()

    def model_label(self, model: str) -> str:
        """The client's model name, or ``unknown`` for one not configured: a
        client must not be able to create label values at will."""
        return model if model in self._known else UNKNOWN_MODEL

    def _resolve(self, model: str, deployment: str, status: int) -> _Children:
        key = (model, deployment, status)
        children = self._children.get(key)
        if children is None:
            per_model = self._models.get(model)
            if per_model is None:
                per_model = self._models[model] = _ModelChildren(
                    self.duration.labels(model), self.ttft.labels(model), self.tokens.labels(model, "input"),
                    self.tokens.labels(model, "cached_input"), self.tokens.labels(model, "output"),
                    self.cost.labels(model),
                )
            children = self._children[key] = _Children(self.requests.labels(model, deployment, str(status)), per_model)
        return children

    def record(
        self, model: str, deployment: str | None, status: int, latency_s: float, ttft_s: float | None,
        usage: Usage | None, cost: Decimal | None, cache: str, limited_scope: str | None,
        upstream_s: float | None,
    ) -> None:
        """One finished request; ``model`` is already a label (``model_label``)."""
        c = self._resolve(model, deployment or "", status)
        c.requests.inc()
        m = c.model
        m.duration.observe(latency_s)
        if ttft_s is not None:
            m.ttft.observe(ttft_s)
        if usage is not None:
            if usage.input_tokens:
                m.input.inc(usage.input_tokens)
            if usage.cached_input_tokens:
                m.cached_input.inc(usage.cached_input_tokens)
            if usage.output_tokens:
                m.output.inc(usage.output_tokens)
        if cost:
            m.cost.inc(float(cost))
        cache_child = self._cache_children.get(cache)
        if cache_child is not None:
            cache_child.inc()
        if limited_scope is not None:
            limit_child = self._limit_children.get(limited_scope)
            if limit_child is None:
                limit_child = self._limit_children[limited_scope] = self.rate_limited.labels(limited_scope)
            limit_child.inc()
        if upstream_s is not None and deployment:
            hist = self._upstream.get(deployment)
            if hist is None:
                hist = self._upstream[deployment] = self.upstream.labels(deployment)
            hist.observe(upstream_s)

    # ------------------------------------------------------------ exposition

    def exposition(self) -> bytes:
        """The text format. With several workers this reads every worker's
        files: call it off the event loop."""
        if self.registry is not None:
            return generate_latest(self.registry)
        assert self.multiprocess_path is not None
        registry = CollectorRegistry()
        registry.register(_MultiProcessView(self.multiprocess_path, self._declared()))
        registry.register(self._extra)
        return generate_latest(registry)

    def _declared(self) -> list[tuple[str, str, str]]:
        return [(m._name, m._documentation, m._type) for m in (
            self.requests, self.duration, self.ttft, self.upstream, self.tokens, self.cost, self.cache,
            self.rate_limited, self.in_flight, self.langfuse_sent, self.langfuse_dropped, self.log_lines_dropped,
            self.routing_panic,
        )]


class _Extra(Collector):
    """Values read at scrape time: each deployment's circuit state as this
    process sees it (shared through Redis when configured)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("gateway_circuit_state",
                                   "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.",
                                   labels=["deployment"])
        states = self._metrics._circuit_states
        if states is not None:
            for deployment, state in sorted(states().items()):
                family.add_metric([deployment], state)
        yield family


class _MultiProcessView(Collector):
    """Every worker's values added up, plus an empty family for each metric
    no worker has written yet: every family shows from start-up (SPEC §8)."""

    def __init__(self, path: str, declared: list[tuple[str, str, str]]) -> None:
        self._path = path
        self._declared = declared

    def collect(self) -> Iterator[Metric]:
        seen = set()
        collector = MultiProcessCollector(None, self._path)  # type: ignore[no-untyped-call]
        for family in collector.collect():  # type: ignore[no-untyped-call]
            seen.add(family.name)
            yield family
        for name, documentation, kind in self._declared:
            if name not in seen:
                yield Metric(name, documentation, kind)
