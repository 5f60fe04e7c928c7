"""What a failed attempt allows, and how long to wait before trying the same
deployment again (SPEC §8 "Retries").

Retried: connection errors, timeouts, garbage answers, 429, 5xx (500, 502,
503, 504, 529 …). Not retried: a provider's other 4xx — the request itself is
at fault, and no deployment would answer differently. A provider that refuses
the gateway's own key (401/403) is not asked again, but another deployment
may serve the request.
"""

from __future__ import annotations

import random

from llm_gateway.errors import GatewayError, UpstreamAuthRejected

RETRY, ELSEWHERE, FINAL = 0, 1, 2


def verdict(exc: GatewayError) -> int:
    if isinstance(exc, UpstreamAuthRejected):
        return ELSEWHERE
    return RETRY if exc.retryable else FINAL


class Backoff:
    """Exponential backoff with jitter, at least the provider's Retry-After."""

    __slots__ = ("base_s", "max_s", "rng")

    def __init__(self, base_s: float, max_s: float, rng: random.Random) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.rng = rng

    def delay(self, tries: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt on a deployment already
        tried ``tries`` times in this request; ``None`` when the provider
        asks for a longer wait than ``max_s`` (then it is not asked again).

        The exponential part is ``base_s * 2**(tries-1)``, of which a random
        half is waited, so that retries from many requests spread out."""
        if retry_after is not None and retry_after > self.max_s:
            return None
        step = self.base_s * 2.0 ** (tries - 1)
        wait = min(step / 2 + self.rng.random() * step / 2, self.max_s)
        return max(wait, retry_after or 0.0)
