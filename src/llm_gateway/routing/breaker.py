"""A circuit breaker per deployment (SPEC §8 "Circuit breaker").

    closed ──failure_threshold consecutive failed attempts──► open
    open ──cooldown_s──► half-open: one trial attempt
    half-open ──the trial succeeds──► closed
    half-open ──the trial fails──► open again, for another cooldown

Only the trial decides a circuit that is not closed: attempts that began
before it opened may still end, and their results are ignored. The state
here is this process's view; with Redis, ``SharedBreakers`` keeps it in step
with every other process (``sync``) and holds the one trial across them.

Every change is logged (``llm_gateway.routing``), naming the deployment and
why: opening at warning ("5 consecutive failures (last: connection refused);
next trial in 30 s"), the trial (half-open) and closing at info; each line
also carries ``event``, ``deployment`` and ``next_trial_s`` as JSON fields.
"""

from __future__ import annotations

import logging
import math

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

    def start_trial(self) -> None:
        """This process makes the one trial of a cooled-down circuit."""
        self.trial = True
        self._log(logging.INFO, "circuit_half_open", "half-open: cooldown over; one trial request is let through")

    def succeeded(self, trial: bool) -> None:
        if trial:
            self.trial = False
            if not self.closed:
                self.closed = True
                self._log(logging.INFO, "circuit_closed", "closed: its trial request succeeded")
            self.failures = 0
        elif self.closed:
            self.failures = 0

    def failed(self, trial: bool, now: float, cause: str | None = None) -> None:
        """A failed attempt; ``cause`` (e.g. "connection refused") is named
        when it opens the circuit."""
        last = f" (last: {cause})" if cause else ""
        if trial:
            self.trial = False
            self._open(now, f"its trial request failed{last}")
        elif self.closed:
            self.failures += 1
            if self.failures >= self.threshold:
                self._open(now, f"{self.failures} consecutive failures{last}")

    def abandoned(self) -> None:
        """The trial ended without a verdict (the client went away): another may try."""
        self.trial = False

    def _open(self, now: float, why: str) -> None:
        self.closed = False
        self.open_until = now + self.cooldown_s
        self._log(logging.WARNING, "circuit_open", f"opened: {why}", self.cooldown_s)

    def _log(self, level: int, event: str, what: str, next_trial_s: float | None = None) -> None:
        due = ""
        if next_trial_s is not None:
            next_trial_s = round(next_trial_s, 3)
            due = f"; next trial in {max(1, math.ceil(next_trial_s))} s"
        log.log(level, "circuit of %s %s%s", self.label, what, due, extra={"fields": {
            "event": event, "deployment": self.label, "next_trial_s": next_trial_s}})

    def sync(self, failures: int, tripped: bool, open_ms: int, now: float) -> None:
        """Adopt the shared state: consecutive failures, whether the circuit is
        tripped (open or half-open), and the milliseconds of cooldown left."""
        if self.pending:
            return
        self.failures = failures
        if not tripped:
            if not self.closed:
                self._log(logging.INFO, "circuit_closed", "closed: another process's trial request succeeded")
            self.closed = True
            return
        if self.closed:
            self._log(logging.WARNING, "circuit_open", "opened by another process's failures",
                      open_ms / 1000 if open_ms > 0 else None)
        self.closed = False
        self.open_until = now + open_ms / 1000 if open_ms > 0 else min(self.open_until, now)
