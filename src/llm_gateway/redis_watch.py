"""Whether this process may use Redis right now, and how it learns that
Redis is back.

A failed command marks Redis down; from then on the limiter and the response
cache fall back without touching Redis (no request pays a timeout to a dead
server), and one background task PINGs it every ``PROBE_EVERY_S``. The first
PING that answers (or a ``/ready`` check that does) marks it up again, so
the fallback ends within one probe interval of Redis answering instead of
after a blind pause. The hot path reads one attribute, ``up``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

log = logging.getLogger("llm_gateway")

# A refused connection costs a few hundred microseconds, so probing ten times a
# second is cheap for a dead server and keeps the fallback within ~0.1 s of
# Redis answering; a server that does not answer costs the probe (not a
# request) the client's 1 s timeouts.
PROBE_EVERY_S = 0.1
LOG_EVERY_S = 30.0  # a flapping Redis logs one outage (and its end) per this long


class RedisWatch:
    """One per process, shared by everything that falls back when Redis fails."""

    def __init__(self, client: Any, probe_every_s: float = PROBE_EVERY_S) -> None:
        self.up = True
        self._client = client
        self._every = probe_every_s
        self._probe: asyncio.Task[None] | None = None
        self._logged_at = -LOG_EVERY_S
        self._logging = False  # this outage was logged, so its end is too

    def lost(self, who: str, cause: str) -> None:
        """A command failed (``cause``: the error's name): stop using Redis
        until it answers a PING."""
        if self.up:
            self.up = False
            now = time.monotonic()
            self._logging = now - self._logged_at >= LOG_EVERY_S
            if self._logging:
                self._logged_at = now
                log.warning("Redis unavailable to the %s (%s); rate limits (limits.failure_mode) and the "
                            "response cache fall back until it answers again", who, cause)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._until_answered())

    def answered(self) -> None:
        """Redis answered (the probe, or ``/ready``): use it again."""
        if not self.up:
            self.up = True
            if self._logging:
                log.info("Redis answers again; rate limits and the response cache use it again")

    async def _until_answered(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            if self.up:
                return
            try:
                await self._client.ping()
            except Exception:
                continue
            self.answered()
            return

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
