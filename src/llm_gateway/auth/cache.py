"""The hot path's memory: resolved credentials, so a warm key costs no
database round trip.

An entry is served until it expires (``ttl``); after half its life the
authenticator reloads it in the background, so a busy key never waits for
the database and is never served from a read older than ``ttl``. Changes to
a key or a user evict at once in this process and, with Redis, in every
other (see ``invalidation``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, NamedTuple, TypeVar

V = TypeVar("V")


class Entry(NamedTuple, Generic[V]):
    expires: float
    refresh_after: float
    user_id: str | None
    value: V


class TTLCache(Generic[V]):
    def __init__(self, ttl: float, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._data: OrderedDict[str, Entry[V]] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}

    def entry(self, key: str, now: float) -> Entry[V] | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item.expires <= now:
            self._drop(key)
            return None
        return item

    def get(self, key: str) -> V | None:
        item = self.entry(key, time.monotonic())
        return None if item is None else item.value

    def put(self, key: str, value: V, user_id: str | None = None, ttl: float | None = None) -> None:
        if key in self._data:
            self._drop(key)
        life = self.ttl if ttl is None else ttl
        now = time.monotonic()
        self._data[key] = Entry(now + life, now + life / 2, user_id, value)
        if user_id is not None:
            self._by_user.setdefault(user_id, set()).add(key)
        while len(self._data) > self._max:
            self._drop(next(iter(self._data)))

    def _drop(self, key: str) -> None:
        item = self._data.pop(key, None)
        if item is not None and item.user_id is not None:
            keys = self._by_user.get(item.user_id)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_user[item.user_id]

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
