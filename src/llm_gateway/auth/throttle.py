"""Login throttling against password guessing.

After ``max_failures`` failed logins for one email (or ``max_failures_ip``
from one client address) within ``window_s``, further attempts answer 429
until the window has passed. In process by default; on Redis when
configured, so the count is shared by every process and instance.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from llm_gateway.errors import RateLimited

log = logging.getLogger("llm_gateway.auth")


class LoginThrottle:
    def __init__(
        self, redis: Any | None = None, *, window_s: int = 300, max_failures: int = 5, max_failures_ip: int = 20
    ) -> None:
        self._redis = redis
        self.window_s = window_s
        self._limits = {"email": max_failures, "ip": max_failures_ip}
        self._memory: dict[str, tuple[float, int]] = {}  # key -> (window start, failures)

    def _keys(self, email: str, ip: str) -> dict[str, str]:
        return {"email": f"llm-gateway:login:email:{email}", "ip": f"llm-gateway:login:ip:{ip}"}

    async def check(self, email: str, ip: str) -> None:
        for kind, key in self._keys(email, ip).items():
            count, ttl = await self._get(key)
            if count >= self._limits[kind]:
                raise RateLimited(
                    "Too many failed sign-in attempts. Try again later.", retry_after=max(1.0, ttl)
                )

    async def failed(self, email: str, ip: str) -> None:
        for key in self._keys(email, ip).values():
            await self._incr(key)

    async def succeeded(self, email: str) -> None:
        key = f"llm-gateway:login:email:{email}"
        self._memory.pop(key, None)
        if self._redis is not None:
            try:
                await self._redis.delete(key)
            except Exception as exc:
                log.warning("login throttle: Redis unavailable (%s)", type(exc).__name__)

    async def _get(self, key: str) -> tuple[int, float]:
        if self._redis is not None:
            try:
                count, ttl = await self._redis.pipeline().get(key).ttl(key).execute()
                return int(count or 0), float(ttl if ttl and ttl > 0 else self.window_s)
            except Exception as exc:
                log.warning("login throttle: Redis unavailable (%s); counting in process", type(exc).__name__)
        start, count = self._memory.get(key, (0.0, 0))
        remaining = start + self.window_s - time.monotonic()
        if remaining <= 0:
            return 0, 0.0
        return count, remaining

    async def _incr(self, key: str) -> None:
        if self._redis is not None:
            try:
                pipe = self._redis.pipeline()
                pipe.incr(key)
                pipe.expire(key, self.window_s, nx=True)
                await pipe.execute()
                return
            except Exception as exc:
                log.warning("login throttle: Redis unavailable (%s); counting in process", type(exc).__name__)
        now = time.monotonic()
        start, count = self._memory.get(key, (now, 0))
        if start + self.window_s <= now:
            start, count = now, 0
        self._memory[key] = (start, count + 1)
        if len(self._memory) > 100_000:  # bound memory under a spray of addresses
            cutoff = now - self.window_s
            self._memory = {k: v for k, v in self._memory.items() if v[0] > cutoff}
