"""Request ids."""

from __future__ import annotations

import itertools
import secrets


class RequestIds:
    """New request ids: a random prefix per process and a counter, so making
    one costs no system call. Create it in each worker process (lifespan)."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = "req_" + secrets.token_hex(6)
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"
