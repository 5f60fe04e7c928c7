"""Spreading a model's traffic over its deployments.

Strategies, chosen per model (``strategy``):

- ``weighted`` (default): at random in proportion to ``weight``.
- ``least_busy``: the fewest attempts in flight relative to ``weight``; ties
  at random by weight.
- ``lowest_latency``: the lowest moving average of attempt latency (time to
  the first event for streams, the whole call otherwise). Deployments not yet
  measured go first, and one request in twenty is sent by weight so that a
  deployment that was slow once is measured again.

``Stats`` are per deployment (``<provider>/<model>``), shared by every model
that routes to it, and only this process's.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llm_gateway.routing.router import Route

EWMA_ALPHA = 0.2  # weight of the newest sample in the moving average
EXPLORE = 0.05  # share of lowest_latency requests routed by weight
FAILURE_FLOOR_S = 1.0  # a failed attempt counts as at least this slow


class Stats:
    __slots__ = ("in_flight", "latency")

    def __init__(self) -> None:
        self.in_flight = 0
        self.latency = 0.0  # moving average in seconds; 0 until measured

    def observe(self, seconds: float) -> None:
        self.latency = seconds if self.latency == 0 else self.latency + EWMA_ALPHA * (seconds - self.latency)

    def failed(self, seconds: float) -> None:
        """A failure that came back fast must not make a deployment look fast."""
        self.observe(max(seconds, 2 * self.latency, FAILURE_FLOOR_S))


def by_weight(routes: Sequence[Route], rng: random.Random) -> Route:
    total = 0.0
    for r in routes:
        total += r.deployment.weight
    x = rng.random() * total
    for r in routes:
        x -= r.deployment.weight
        if x < 0:
            return r
    return routes[-1]


def least_busy(routes: Sequence[Route], rng: random.Random) -> Route:
    best: list[Route] = []
    low = float("inf")
    for r in routes:
        load = r.stats.in_flight / r.deployment.weight
        if load < low:
            low, best = load, [r]
        elif load == low:
            best.append(r)
    return best[0] if len(best) == 1 else by_weight(best, rng)


def lowest_latency(routes: Sequence[Route], rng: random.Random) -> Route:
    unmeasured = [r for r in routes if r.stats.latency == 0]
    if unmeasured:
        return by_weight(unmeasured, rng)
    if rng.random() < EXPLORE:
        return by_weight(routes, rng)
    return min(routes, key=lambda r: r.stats.latency)


STRATEGIES = {"weighted": by_weight, "least_busy": least_busy, "lowest_latency": lowest_latency}
