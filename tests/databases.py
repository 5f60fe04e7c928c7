"""Real databases for tests: a temporary SQLite file, or a fresh database on
this machine's PostgreSQL (127.0.0.1:5432, user postgres), dropped afterwards.

Outside CI an unreachable PostgreSQL skips its tests with the reason; with
``CI=true`` it fails them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("TEST_PG_DATABASE", "test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} is unreachable ({type(exc).__name__}: {exc})"
    if IN_CI:
        pytest.fail(message + " — in CI the service must be up")
    pytest.skip(message)


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    name = "gw_test_" + secrets.token_hex(6)
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        unavailable(f"PostgreSQL at {PG_HOST}:{PG_PORT}", exc)
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A database URL of ``kind`` (``sqlite`` or ``postgresql``), migrated by
    the gateway itself (SQLite) or by ``migrate`` (PostgreSQL, done here)."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{folder}/gateway-{secrets.token_hex(4)}.db"
        return
    with postgres_database() as url:
        from llm_gateway.db import migrate
        from llm_gateway.db.engine import Database

        async def run() -> None:
            db = Database(url)
            try:
                await migrate.upgrade(db)
            finally:
                await db.aclose()

        asyncio.run(run())
        yield url


def redis_url() -> str:
    """The test Redis, flushed; skips (or fails in CI) when unreachable."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        unavailable(f"Redis at {REDIS_URL}", exc)
    return REDIS_URL
