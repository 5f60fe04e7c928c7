"""The async engine and sessions. SQLite (aiosqlite) by default, PostgreSQL
(asyncpg) in production; pools sized for several workers per instance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

_PG_CONNECT: dict[str, Any] = {"timeout": 5, "command_timeout": 30}


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            # A fixed pool: a connection opened under a burst is kept, never
            # closed on return and opened again (PostgreSQL connections cost
            # milliseconds to open). The money hot path has its own connection.
            kwargs.update(pool_size=12, max_overflow=0, pool_recycle=1800, pool_timeout=10)
            # asyncpg: fail fast when the server is down instead of hanging a request.
            kwargs["connect_args"] = dict(_PG_CONNECT)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def connect_args(self) -> dict[str, Any]:
        """``asyncpg.connect``'s arguments for this database, as the engine's."""
        _, kwargs = self.engine.dialect.create_connect_args(make_url(self.url))
        return {**kwargs, **_PG_CONNECT}

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def session(self) -> AsyncSession:
        return self.sessions()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
