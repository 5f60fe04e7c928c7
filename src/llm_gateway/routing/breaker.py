"""A circuit breaker per deployment (SPEC §8 "Circuit breaker").

    closed ──too many failed attempts──► open
    open ──cooldown_s──► half-open: trials, one at a time
    half-open ──``trials`` trials in a row succeed──► closed
    half-open ──a trial fails──► open again, for another cooldown

"Too many" is, with a ``Window`` (mode ``error_rate``): at least
``min_calls`` attempts ended in the last ``window_s`` and ``failure_rate``
of them failed; or ``threshold`` failures in a row (``min_calls`` in that
mode, so that a deployment that is down opens however little traffic it
gets; ``failure_threshold`` in mode ``consecutive``, which has no window).
A rate, not a count, is what tells a flaky provider (every attempt a coin
toss, retries cope) from a broken one; the count alone opened every circuit
of a model whose providers failed half the time.

Only the trials decide a circuit that is not closed: attempts that began
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
SLICES = 10  # a window is kept as this many slices: it slides by a tenth of itself


class Window:
    """Attempts and failures over the last ``window_s`` seconds (to within a
    slice): a ring of per-slice counts and their running sums, so adding
    one is a few increments and nothing is allocated."""

    __slots__ = ("_calls", "_failures", "_head", "_slice", "calls", "failures")

    def __init__(self, window_s: float) -> None:
        self._slice = window_s / SLICES
        self._calls = [0] * SLICES
        self._failures = [0] * SLICES
        self._head = -SLICES  # the newest slice's number (time // slice)
        self.calls = 0
        self.failures = 0

    def add(self, now: float, failed: bool) -> None:
        n = int(now // self._slice)
        if n > self._head:
            self._advance(n)
        i = n % SLICES if n >= self._head else self._head % SLICES  # (a late clock read: the newest slice)
        self._calls[i] += 1
        self.calls += 1
        if failed:
            self._failures[i] += 1
            self.failures += 1

    def _advance(self, n: int) -> None:
        """Forget the slices older than the window ending at slice ``n``."""
        if n - self._head >= SLICES:
            self.clear()
        else:
            for k in range(self._head + 1, n + 1):
                i = k % SLICES
                self.calls -= self._calls[i]
                self.failures -= self._failures[i]
                self._calls[i] = self._failures[i] = 0
        self._head = n

    def clear(self) -> None:
        for i in range(SLICES):
            self._calls[i] = self._failures[i] = 0
        self.calls = self.failures = 0


class CircuitBreaker:
    __slots__ = ("closed", "cooldown_s", "failure_rate", "failures", "label", "min_calls", "open_until", "passed",
                 "pending", "threshold", "trial", "trials", "window")

    def __init__(self, label: str, threshold: int, cooldown_s: float, trials: int = 1,
                 failure_rate: float = 0.0, min_calls: int = 0, window_s: float = 0.0) -> None:
        """With ``window_s`` (mode ``error_rate``) the rate opens it too."""
        self.label = label
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.trials = trials
        self.failure_rate = failure_rate
        self.min_calls = min_calls
        self.window = Window(window_s) if window_s > 0 else None
        self.closed = True
        self.failures = 0  # consecutive failed attempts while closed
        self.passed = 0  # trials passed since it opened
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
        """This process makes the next trial of a cooled-down circuit."""
        self.trial = True
        if self.passed == 0:  # (said once per half-open spell, not per trial)
            self._log(logging.INFO, "circuit_half_open", "half-open: cooldown over; one trial request is let through"
                      if self.trials == 1 else f"half-open: cooldown over; {self.trials} trial requests, in turn")

    def succeeded(self, trial: bool, now: float = 0.0) -> None:
        if trial:
            self.trial = False
            if not self.closed:
                self.passed += 1
                if self.passed < self.trials:
                    return  # the next trial may start at once
                self._close("its trial request succeeded" if self.trials == 1
                            else f"{self.passed} trial requests in a row succeeded")
            self.failures = 0
        elif self.closed:
            self.failures = 0
            if self.window is not None:
                self.window.add(now, False)

    def failed(self, trial: bool, now: float, cause: str | None = None) -> bool:
        """A failed attempt; ``cause`` (e.g. "connection refused") is named
        when it opens the circuit. True when this failure opened it."""
        last = f" (last: {cause})" if cause else ""
        if trial:
            self.trial = False
            self._open(now, f"its trial request failed{last}")
            return True
        if not self.closed:
            return False
        self.failures += 1
        if self.failures >= self.threshold:
            self._open(now, f"{self.failures} consecutive failures{last}")
            return True
        w = self.window
        if w is not None:
            w.add(now, True)
            if w.calls >= self.min_calls and w.failures >= self.failure_rate * w.calls:
                self._open(now, f"{w.failures} of the last {w.calls} attempts failed{last}")
                return True
        return False

    def abandoned(self) -> None:
        """The trial ended without a verdict (the client went away): another may try."""
        self.trial = False

    def _open(self, now: float, why: str) -> None:
        self.closed = False
        self.passed = 0
        self.open_until = now + self.cooldown_s
        if self.window is not None:
            self.window.clear()  # (judged afresh once closed again)
        self._log(logging.WARNING, "circuit_open", f"opened: {why}", self.cooldown_s)

    def _close(self, why: str) -> None:
        self.closed = True
        self.passed = 0
        self.failures = 0
        if self.window is not None:
            self.window.clear()
        self._log(logging.INFO, "circuit_closed", f"closed: {why}")

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
                self._close("another process's trial request succeeded")
            self.closed = True
            return
        if self.closed:
            self._log(logging.WARNING, "circuit_open", "opened by another process's failures",
                      open_ms / 1000 if open_ms > 0 else None)
        if open_ms > 0:  # a fresh cooldown, here or elsewhere: trials start over
            self.passed = 0
        self.closed = False
        self.open_until = now + open_ms / 1000 if open_ms > 0 else min(self.open_until, now)
