"""Telling "the database is unreachable" apart from every other failure, so
that an outage is a 503 ``database_unavailable`` (SPEC §4) and not a 500."""

from __future__ import annotations

import os

import asyncpg
from sqlalchemy import exc as sa

from llm_gateway.errors import DatabaseUnavailable

# The connection (not the statement) failed: the database is down, restarting
# or unreachable. A server's error about the statement itself is not one.
_ASYNCPG_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError, asyncpg.InterfaceError,
    # The protocol out of step, e.g. after the server's shutdown notice arrived on an idle connection.
    asyncpg.exceptions.InternalClientError,
)
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, *_ASYNCPG_CONNECTION_ERRORS)


def database_unavailable() -> DatabaseUnavailable:
    return DatabaseUnavailable("The gateway's database is unreachable; nothing was sent upstream. Try again shortly.")


_DRIVERS = (f"{os.sep}asyncpg{os.sep}", f"{os.sep}sqlalchemy{os.sep}", f"{os.sep}aiosqlite{os.sep}")
_DB_ERRORS = (sa.TimeoutError, sa.OperationalError, sa.InterfaceError, *_ASYNCPG_CONNECTION_ERRORS)


def _raised_by_driver(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if any(d in tb.tb_frame.f_code.co_filename for d in _DRIVERS):
            return True
        tb = tb.tb_next
    return False


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the database cannot be reached.
    A bare socket error counts only when a database driver raised it (not a
    client's or a provider's connection)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 6:
        if isinstance(current, sa.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _DB_ERRORS):
            return True
        if isinstance(current, OSError | TimeoutError) and _raised_by_driver(current):
            return True
        seen += 1
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False
