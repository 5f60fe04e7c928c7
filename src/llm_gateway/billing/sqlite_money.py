"""The money hot path on SQLite: one writer thread, one connection, group
commit.

Through the async driver every statement is a hop to a worker thread and
concurrent transactions wait on SQLite's lock by sleeping; here reserves and
settles run on a dedicated thread, the ones queued together in one
``BEGIN IMMEDIATE … COMMIT`` (each in a savepoint), so writes in this process
queue in order instead of colliding. Other processes on the same file still
serialise through SQLite's lock (``busy_timeout``), once a batch rather than
once a request. Amounts are integer nano-dollars, as in the schema.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")


def sqlite_time(value: datetime) -> str:
    """The text form SQLAlchemy's DateTime uses on SQLite (naive UTC)."""
    return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


class SQLiteWriter:
    """Group commit on one thread: operations queued while the thread is busy
    run together in the next transaction, each inside a savepoint of its own
    (one that raises is undone alone), so a burst of requests takes SQLite's
    write lock once, not once each — fewer lock hand-overs between the
    processes that share the file, which is where several workers lost time."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-money")
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._queue: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
        self._draining = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` in a transaction on the writer thread
        (shared with whatever else is queued) and return its result."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._queue.append((fn, args, done))
            start = not self._draining
            self._draining = True
        if start:
            self._executor.submit(self._drain, loop)
        return await done

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with self._lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._draining = False
                    return
            outcomes = self._transaction(batch)
            loop.call_soon_threadsafe(_resolve, outcomes)

    def _transaction(
        self, batch: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for fn, args, done in batch:
                    conn.execute("SAVEPOINT op")
                    try:
                        outcomes.append((done, fn(conn, *args), None))
                    except Exception as exc:
                        conn.execute("ROLLBACK TO op")
                        outcomes.append((done, None, exc))
                    conn.execute("RELEASE op")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # the transaction failed: every operation in it did
            return [(done, None, exc) for _, _, done in batch]
        return outcomes

    def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._executor.submit(shut).result()
        self._executor.shutdown(wait=True)


def _resolve(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for done, result, exc in outcomes:
        if done.done():
            continue
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(result)


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
