"""Telling every process that a key or a user changed.

Without Redis one process holds the truth: changes evict its cache directly,
and cached entries live one second, so even several workers sharing one
database refuse a revoked key within a second. With Redis, changes are
published on a channel every process subscribes to; while the subscription
is live entries may live a minute, and whenever it is not they fall back to
one second. Every message bumps ``generation``, so a database read that raced
with a change is not cached for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from llm_gateway.auth.cache import TTLCache

log = logging.getLogger("llm_gateway.auth")

CHANNEL = "llm-gateway:auth-invalidate"
SHORT_TTL = 1.0
LONG_TTL = 60.0


class InvalidationBus:
    def __init__(self, cache: TTLCache[Any], redis: Any | None) -> None:
        self.cache = cache
        self._redis = redis
        self._live = False
        self.generation = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def ttl(self) -> float:
        return LONG_TTL if self._live else SHORT_TTL

    def start(self) -> None:
        if self._redis is not None:
            self._task = asyncio.get_running_loop().create_task(self._listen())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _apply(self, message: str) -> None:
        self.generation += 1
        kind, _, ident = message.partition(":")
        if kind == "key":
            self.cache.evict(ident)
        elif kind == "user":
            self.cache.evict_user(ident)
        else:
            self.cache.clear()

    async def publish_key(self, key_hash: str) -> None:
        await self._publish(f"key:{key_hash}")

    async def publish_user(self, user_id: str) -> None:
        await self._publish(f"user:{user_id}")

    async def _publish(self, message: str) -> None:
        self._apply(message)
        if self._redis is None:
            return
        try:
            await asyncio.wait_for(self._redis.publish(CHANNEL, message), timeout=2)
        except Exception as exc:  # Redis down: other processes fall back to the short TTL
            log.warning("could not broadcast an auth change (%s); other processes see it within %ss",
                        type(exc).__name__, SHORT_TTL)

    async def _listen(self) -> None:
        delay = 0.2
        while True:
            pubsub = self._redis.pubsub()  # type: ignore[union-attr]
            try:
                await pubsub.subscribe(CHANNEL)
                self._live = True
                self.cache.clear()  # anything cached while deaf may be stale
                self.generation += 1
                delay = 0.2
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message["data"]
                        self._apply(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.cache.clear()  # entries cached for a minute can no longer be trusted
                if self._live:
                    log.warning("auth invalidation channel lost (%s); caching for %ss", type(exc).__name__,
                                SHORT_TTL)
            finally:
                self._live = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
