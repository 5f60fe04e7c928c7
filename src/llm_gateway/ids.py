"""Request ids."""

from __future__ import annotations

import itertools
import random
import secrets
import time


class RequestIds:
    """New request ids: a random prefix per process and a counter, so making
    one costs no system call. Create it in each worker process (lifespan)."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = "req_" + secrets.token_hex(6)
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"


def new_id(prefix: str) -> str:
    """A database id that sorts by creation time: ``<prefix>_<µs><random>``,
    so "newest first" is ``ORDER BY id DESC`` and paging with ``after`` works.

    The 64 random bits come from ``random`` (reseeded from the OS in every
    forked worker), not ``secrets``: ids name rows and are no secret, and a
    system call for each of a request's three ids is measurable on the hot
    path. Secrets (keys, tokens) are made with ``secrets``."""
    return f"{prefix}_{time.time_ns() // 1_000:014x}{random.getrandbits(64):016x}"
