"""``UsageWriter`` against a real SQLite file: records are written on flush,
in batches, by the background task at ``batch_size`` or after the interval;
a failed write keeps every record (in order) for the next try; ``aclose``
writes what is left; a full buffer drops the oldest and counts them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from llm_gateway.billing.usage import UsageEvent, UsageWriter
from llm_gateway.db.engine import Database
from llm_gateway.db.models import Base, UsageRecord


def event(n: int) -> UsageEvent:
    return UsageEvent(request_id=f"r{n}", model="gpt-test", endpoint="chat", status=200, user_id="user_1",
                      input_tokens=n, output_tokens=2 * n, cost_usd=Decimal("0.000000123") * n)


def run(tmp_path: Path, body: Callable[[Database], Awaitable[None]]) -> None:
    async def main() -> None:
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/usage.db")
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        try:
            await body(db)
        finally:
            await db.aclose()

    asyncio.run(main())


async def stored(db: Database) -> list[UsageRecord]:
    async with db.session() as session:
        return list((await session.execute(select(UsageRecord).order_by(UsageRecord.id))).scalars())


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


class FlakyDatabase:
    """A ``Database`` whose ``session()`` fails the next ``failures`` times
    (and the ``fail_at``-th time), counting the calls."""

    def __init__(self, db: Database, failures: int = 0, fail_at: int | None = None) -> None:
        self.db = db
        self.failures = failures
        self.fail_at = fail_at
        self.calls = 0

    @property
    def dialect(self) -> str:  # the writer picks COPY (PostgreSQL) or INSERT by it
        return self.db.dialect

    def session(self) -> Any:
        self.calls += 1
        if self.failures > 0 or self.calls == self.fail_at:
            self.failures = max(0, self.failures - 1)
            raise ConnectionError("database down")
        return self.db.session()


def writer_on(flaky: FlakyDatabase, **options: Any) -> UsageWriter:
    return UsageWriter(flaky, **options)  # type: ignore[arg-type]


def test_flush_writes_every_field(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        writer = UsageWriter(db)
        first = event(1)
        first.ttft_ms, first.stream, first.deployment, first.key_id = 12.5, True, "oai/gpt-4o-mini", "key_1"
        writer.record(first)
        writer.record(event(2))
        assert writer.pending == 2 and await stored(db) == []
        await writer.flush()
        assert writer.pending == 0
        rows = await stored(db)
        assert [r.request_id for r in rows] == ["r1", "r2"]
        assert (rows[0].cost_usd, rows[0].ttft_ms, rows[0].stream, rows[0].key_id) == (
            Decimal("0.000000123"), 12.5, True, "key_1")
        assert rows[0].created_at == first.created_at and rows[0].id == first.id
        await writer.flush()  # nothing pending: nothing to do
        assert len(await stored(db)) == 2

    run(tmp_path, body)


def test_flush_writes_in_batches(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        sessions = FlakyDatabase(db)
        writer = writer_on(sessions, batch_size=3)
        for n in range(7):
            writer.record(event(n))
        await writer.flush()
        assert sessions.calls == 3  # 3 + 3 + 1
        assert [r.request_id for r in await stored(db)] == [f"r{n}" for n in range(7)]

    run(tmp_path, body)


def test_background_task_writes_at_batch_size_and_after_the_interval(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        writer = UsageWriter(db, flush_interval_s=60, batch_size=3)
        writer.start()
        for n in range(3):
            writer.record(event(n))  # the third wakes the writer long before 60 s
        await wait_for(lambda: _count_is(db, 3))
        await writer.aclose()

        quick = UsageWriter(db, flush_interval_s=0.05, batch_size=500)
        quick.start()
        quick.record(event(9))
        await wait_for(lambda: _count_is(db, 4))
        await quick.aclose()

    run(tmp_path, body)


async def _count_is(db: Database, n: int) -> bool:
    return len(await stored(db)) == n


def test_a_failed_write_loses_nothing(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        writer = writer_on(FlakyDatabase(db, failures=1), batch_size=2)
        for n in range(5):
            writer.record(event(n))
        with pytest.raises(ConnectionError):
            await writer.flush()
        assert writer.pending == 5
        writer.record(event(5))
        await writer.flush()
        assert [r.request_id for r in await stored(db)] == [f"r{n}" for n in range(6)]  # order kept

    run(tmp_path, body)


def test_a_failed_commit_midway_keeps_the_unwritten_batches(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        writer = writer_on(FlakyDatabase(db, fail_at=2), batch_size=2)
        for n in range(5):
            writer.record(event(n))
        with pytest.raises(ConnectionError):
            await writer.flush()
        assert writer.pending == 3  # the first batch was written, the rest waits
        await writer.flush()
        assert [r.request_id for r in await stored(db)] == [f"r{n}" for n in range(5)]

    run(tmp_path, body)


def test_background_task_retries_after_a_failure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body(db: Database) -> None:
        failing = FlakyDatabase(db, failures=2)
        writer = writer_on(failing, flush_interval_s=0.02)
        writer.start()
        writer.record(event(1))
        await wait_for(lambda: _count_is(db, 1), timeout=10)
        assert failing.calls >= 3 and writer.pending == 0
        await writer.aclose()

    with caplog.at_level("WARNING", logger="llm_gateway.usage"):
        run(tmp_path, body)
    assert "usage records not written yet" in caplog.text


def test_aclose_flushes_what_is_pending(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        writer = UsageWriter(db, flush_interval_s=60)
        writer.start()
        for n in range(4):
            writer.record(event(n))
        await writer.aclose()
        assert writer.pending == 0 and len(await stored(db)) == 4

        never_started = UsageWriter(db)
        never_started.record(event(7))
        await never_started.aclose()
        assert len(await stored(db)) == 5

    run(tmp_path, body)


def test_aclose_with_the_database_down_logs_instead_of_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(db: Database) -> None:
        writer = writer_on(FlakyDatabase(db, failures=100))
        writer.record(event(1))
        await writer.aclose()
        assert writer.pending == 1

    with caplog.at_level("ERROR", logger="llm_gateway.usage"):
        run(tmp_path, body)
    assert "1 usage records could not be written" in caplog.text


def test_a_full_buffer_drops_the_oldest_and_counts(tmp_path: Path) -> None:
    async def body(db: Database) -> None:
        writer = UsageWriter(db, max_pending=3)
        for n in range(5):
            writer.record(event(n))
        assert writer.pending == 3 and writer.dropped == 2
        await writer.flush()
        assert [r.request_id for r in await stored(db)] == ["r2", "r3", "r4"]

    run(tmp_path, body)
