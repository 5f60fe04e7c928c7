"""Schema migrations with Alembic, driven from code (no alembic.ini).

``upgrade`` is what ``llm-gateway migrate`` runs (safe to run again; on
PostgreSQL it holds an advisory lock so concurrent runs serialise).
``ensure_schema`` runs at start-up: SQLite is upgraded in place; PostgreSQL
must already be at the head revision, else the server refuses to start.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from llm_gateway.db.engine import Database

_LOCK_ID = 7_401_113_557  # arbitrary, constant: the gateway's migration lock


class SchemaOutOfDate(Exception):
    """The database is behind the code; ``llm-gateway migrate`` fixes it."""


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("llm_gateway.db") / "migrations"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _upgrade(sync_conn: Any) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


def _current(sync_conn: Any) -> str | None:
    rev: str | None = MigrationContext.configure(sync_conn).get_current_revision()
    return rev


async def upgrade(db: Database) -> None:
    async with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        await conn.run_sync(_upgrade)


async def current_revision(db: Database) -> str | None:
    async with db.engine.connect() as conn:
        return await conn.run_sync(_current)


async def ensure_schema(db: Database) -> None:
    if db.is_sqlite:
        await upgrade(db)
        return
    current = await current_revision(db)
    if current != head_revision():
        raise SchemaOutOfDate(
            f"the database schema is at revision {current or '(empty)'}, this gateway needs "
            f"{head_revision()}: run `llm-gateway migrate` first"
        )
