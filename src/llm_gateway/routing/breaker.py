"""A circuit breaker per deployment (SPEC §8 "Circuit breaker").

    closed ──failure_threshold consecutive failed attempts──► open
    open ──cooldown_s──► half-open: one trial attempt
    half-open ──the trial succeeds──► closed
    half-open ──the trial fails──► open again, for another cooldown

Only the trial decides a circuit that is not closed: attempts that began
before it opened may still end, and their results are ignored. The state
here is this process's view; with Redis, ``SharedBreakers`` keeps it in step
with every other process (``sync``) and holds the one trial across them.
"""

from __future__ import annotations

import logging

log = logging.getLogger("llm_gateway.routing")

CLOSED, HALF_OPEN, OPEN = 0, 1, 2  # as gateway_circuit_state exports them


class CircuitBreaker:
    __slots__ = ("closed", "cooldown_s", "failures", "label", "open_until", "pending", "threshold", "trial")

    def __init__(self, label: str, threshold: int, cooldown_s: float) -> None:
        self.label = label
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.closed = True
        self.failures = 0  # consecutive failed attempts while closed
        self.open_until = 0.0  # monotonic time the cooldown ends
        self.trial = False  # this process's trial attempt is in flight
        # Writes to the shared state in flight: a read older than them must
        # not undo what this process just decided.
        self.pending = 0

    def state(self, now: float) -> int:
        if self.closed:
            return CLOSED
        return OPEN if now < self.open_until and not self.trial else HALF_OPEN

    def may_trial(self, now: float) -> bool:
        """Open, cooled down, and no trial of this process under way."""
        return not self.closed and not self.trial and now >= self.open_until

    def succeeded(self, trial: bool) -> None:
        if trial:
            self.trial = False
            if not self.closed:
                self.closed = True
                log.info("circuit of %s closed: the trial request succeeded", self.label)
            self.failures = 0
        elif self.closed:
            self.failures = 0

    def failed(self, trial: bool, now: float) -> None:
        if trial:
            self.trial = False
            self._open(now, "its trial request failed")
        elif self.closed:
            self.failures += 1
            if self.failures >= self.threshold:
                self._open(now, f"{self.failures} consecutive failures")

    def abandoned(self) -> None:
        """The trial ended without a verdict (the client went away): another may try."""
        self.trial = False

    def _open(self, now: float, why: str) -> None:
        self.closed = False
        self.open_until = now + self.cooldown_s
        log.warning("circuit of %s opened for %g s: %s", self.label, self.cooldown_s, why)

    def sync(self, failures: int, tripped: bool, open_ms: int, now: float) -> None:
        """Adopt the shared state: consecutive failures, whether the circuit is
        tripped (open or half-open), and the milliseconds of cooldown left."""
        if self.pending:
            return
        self.failures = failures
        if not tripped:
            if not self.closed:
                log.info("circuit of %s closed by another process's trial", self.label)
            self.closed = True
            return
        if self.closed:
            log.warning("circuit of %s opened by another process", self.label)
        self.closed = False
        self.open_until = now + open_ms / 1000 if open_ms > 0 else min(self.open_until, now)
