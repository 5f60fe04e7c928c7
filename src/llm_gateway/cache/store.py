"""Where entries are kept: an in-process LRU with a TTL, or Redis.

The cache is an optimisation, never a point of failure: a Redis error is a
miss (and a skipped store), and after one the cache leaves Redis alone until
it answers a PING again (``RedisWatch``, shared with the limiter), so a dead
server costs requests no timeouts and a restarted one is used again at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from llm_gateway.cache.entries import Entry
from llm_gateway.redis_watch import RedisWatch
from llm_gateway.settings import CacheSettings

_PREFIX = "llm-gateway:cache:"


class MemoryStore:
    """LRU bounded by ``max_entries``; entries expire ``ttl_s`` after they
    were stored."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self._data: OrderedDict[str, tuple[float, Entry]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_s

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Entry | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, entry = item
        if expires <= time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry

    def set(self, key: str, entry: Entry) -> None:
        self._data[key] = (time.monotonic() + self._ttl, entry)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)


class ResponseCache:
    """Entries by key, in this process or on Redis (``redis`` set)."""

    def __init__(self, settings: CacheSettings, redis: Any | None = None, watch: RedisWatch | None = None) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self.global_scope = settings.scope == "global"
        self.max_entry_bytes = settings.max_entry_bytes
        self.memory = MemoryStore(settings.max_entries, settings.ttl_s)
        self._redis = redis
        self._ttl_ms = settings.ttl_s * 1000
        self._watch = watch if watch is not None else RedisWatch(redis)
        self.errors = 0
        self.on_redis_failure: Callable[[], None] | None = None  # counted in metrics

    def _usable(self) -> bool:
        return self._redis is not None and self._watch.up

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        if self.on_redis_failure is not None:
            self.on_redis_failure()
        self._watch.lost("response cache", type(exc).__name__)

    async def get(self, key: str) -> Entry | None:
        if self._redis is None:
            return self.memory.get(key)
        if not self._usable():
            return None
        try:
            data = await self._redis.get(_PREFIX + key)
        except Exception as exc:
            self._failed(exc)
            return None
        if data is None:
            return None
        try:
            return Entry.loads(data)
        except (ValueError, KeyError, TypeError):
            return None  # written by another version: treat as a miss

    async def set(self, key: str, entry: Entry) -> None:
        if len(entry.body) > self.max_entry_bytes:
            return
        if self._redis is None:
            self.memory.set(key, entry)
            return
        if not self._usable():
            return
        try:
            await self._redis.set(_PREFIX + key, entry.dumps(), px=self._ttl_ms)
        except Exception as exc:
            self._failed(exc)
