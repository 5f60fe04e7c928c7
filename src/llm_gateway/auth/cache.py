"""The hot path's memory: resolved credentials, so a warm key costs no
database round trip.

Entries live ``ttl`` seconds. Changes to a key or a user evict at once in
this process and, with Redis, in every other (see ``invalidation``); the TTL
bounds staleness when no broadcast can reach a process.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class TTLCache(Generic[V]):
    def __init__(self, ttl: float, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._data: OrderedDict[str, tuple[float, str | None, V]] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}

    def get(self, key: str) -> V | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            self._drop(key)
            return None
        return item[2]

    def put(self, key: str, value: V, user_id: str | None = None, ttl: float | None = None) -> None:
        if key in self._data:
            self._drop(key)
        self._data[key] = (time.monotonic() + (self.ttl if ttl is None else ttl), user_id, value)
        if user_id is not None:
            self._by_user.setdefault(user_id, set()).add(key)
        while len(self._data) > self._max:
            self._drop(next(iter(self._data)))

    def _drop(self, key: str) -> None:
        item = self._data.pop(key, None)
        if item is not None and item[1] is not None:
            keys = self._by_user.get(item[1])
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_user[item[1]]

    def evict(self, key: str) -> None:
        self._drop(key)

    def evict_user(self, user_id: str) -> None:
        for key in list(self._by_user.get(user_id, ())):
            self._drop(key)

    def clear(self) -> None:
        self._data.clear()
        self._by_user.clear()

    def __len__(self) -> int:
        return len(self._data)
