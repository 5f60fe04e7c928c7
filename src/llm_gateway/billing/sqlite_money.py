"""The money hot path on SQLite: one writer thread, one connection, one
thread hop per operation.

Through the async driver every statement is a hop to a worker thread and
concurrent transactions wait on SQLite's lock by sleeping; here a whole
reserve or settle runs as one ``BEGIN IMMEDIATE … COMMIT`` on a dedicated
thread, so writes in this process queue in order instead of colliding.
Other processes on the same file still serialise through SQLite's lock
(``busy_timeout``). Amounts are integer nano-dollars, as in the schema.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")


def sqlite_time(value: datetime) -> str:
    """The text form SQLAlchemy's DateTime uses on SQLite (naive UTC)."""
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


class SQLiteWriter:
    def __init__(self, path: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-money")
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _transaction(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn, *args)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` as one transaction on the writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._transaction, fn, args)

    def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(shut).result()
        self._executor.shutdown(wait=True)


class Refused(Exception):
    """The hold does not fit: ``reason`` is ``balance`` or ``budget``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def reserve(
    conn: sqlite3.Connection, hold_id: str, user_id: str, key_id: str | None, shared_key_ids: str | None,
    period: str | None, amount: int, budgets: list[tuple[str, int]], expires_at: str, now: str,
) -> None:
    """``budgets``: (key id, budget) of every key budget the hold counts in;
    ``key_id`` and ``shared_key_ids``: what the reservation row records."""
    taken = conn.execute(
        "UPDATE users SET reserved_usd = reserved_usd + ? WHERE id = ? AND balance_usd - reserved_usd >= ?",
        (amount, user_id, amount))
    if taken.rowcount != 1:
        raise Refused("balance")
    if period is not None:
        for budget_key, budget in budgets:
            conn.execute("INSERT INTO key_spend (key_id, period, spent_usd, reserved_usd) VALUES (?, ?, 0, 0) "
                         "ON CONFLICT DO NOTHING", (budget_key, period))
            fits = conn.execute(
                "UPDATE key_spend SET reserved_usd = reserved_usd + ? WHERE key_id = ? AND period = ? "
                "AND spent_usd + reserved_usd + ? <= ?", (amount, budget_key, period, amount, budget))
            if fits.rowcount != 1:
                raise Refused("budget")
    conn.execute(
        "INSERT INTO reservations (id, user_id, key_id, period, amount_usd, expires_at, created_at, shared_key_ids) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (hold_id, user_id, key_id, period, amount, expires_at, now, shared_key_ids))


def settle(
    conn: sqlite3.Connection, hold_id: str, user_id: str, key_id: str | None, cost: int, entry_id: str,
    request_id: str, now: str,
) -> int:
    gone = conn.execute("DELETE FROM reservations WHERE id = ? RETURNING amount_usd, key_id, period, shared_key_ids",
                        (hold_id,)).fetchone()
    held = int(gone[0]) if gone is not None else 0
    cur = conn.execute("SELECT balance_usd, reserved_usd FROM users WHERE id = ?", (user_id,)).fetchone()
    if cur is None:
        return 0
    charged = max(0, min(cost, int(cur[0]) - int(cur[1]) + held))
    conn.execute("UPDATE users SET balance_usd = balance_usd - ?, reserved_usd = reserved_usd - ? WHERE id = ?",
                 (charged, held, user_id))
    if gone is not None and gone[2] is not None:
        for budget_key in [gone[1], *(gone[3] or "").split()]:
            conn.execute("UPDATE key_spend SET spent_usd = spent_usd + ?, reserved_usd = reserved_usd - ? "
                         "WHERE key_id = ? AND period = ?", (charged, held, budget_key, gone[2]))
    if charged > 0:
        conn.execute(
            "INSERT INTO ledger_entries (id, user_id, kind, amount_usd, balance_after_usd, request_id, key_id, "
            "created_at) VALUES (?, ?, 'charge', ?, ?, ?, ?, ?)",
            (entry_id, user_id, -charged, int(cur[0]) - charged, request_id, key_id, now))
    return charged
