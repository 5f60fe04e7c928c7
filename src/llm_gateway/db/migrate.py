"""Schema migrations with Alembic, driven from code (no alembic.ini).

``upgrade`` is what ``llm-gateway migrate`` runs (safe to run again; on
PostgreSQL it holds an advisory lock so concurrent runs serialise).
``ensure_schema`` runs at start-up: SQLite is upgraded in place; PostgreSQL
must already be at the head revision, else the server refuses to start.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from llm_gateway.db.engine import Database

if TYPE_CHECKING:
    from alembic.config import Config

_LOCK_ID = 7_401_113_557  # arbitrary, constant: the gateway's migration lock

# The newest revision in migrations/versions (a test keeps the two equal), so
# that a start-up on an up-to-date schema never has to import Alembic.
HEAD = "0006_retried_settlements"

log = logging.getLogger("llm_gateway.db")


class SchemaOutOfDate(Exception):
    """The database is behind the code; ``llm-gateway migrate`` fixes it."""


def _quiet_alembic() -> None:
    """Alembic logs at INFO each plugin it sets up, its context and every
    step: ten lines an upgrade. ``upgrade`` says what changed in one."""
    logging.getLogger("alembic").setLevel(logging.WARNING)


def alembic_config() -> Config:
    _quiet_alembic()  # before the import: Alembic logs its plugins as it loads
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("llm_gateway.db") / "migrations"))
    return cfg


def head_revision() -> str:
    cfg = alembic_config()
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def _upgrade(sync_conn: Any) -> None:
    cfg = alembic_config()
    from alembic import command

    before = _current(sync_conn)
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")
    after = _current(sync_conn)
    if after != before:
        log.info("database schema upgraded from %s to %s", before or "(empty)", after)


def _current(sync_conn: Any) -> str | None:
    _quiet_alembic()
    from alembic.runtime.migration import MigrationContext

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


async def _stored_revision(db: Database) -> str | None:
    """The revision recorded in the database, read without Alembic."""
    try:
        async with db.engine.connect() as conn:
            rev = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one_or_none()
    except DBAPIError as exc:
        if "alembic_version" in str(exc):
            return None  # a new database
        raise
    return str(rev) if rev is not None else None


def _known_revisions() -> set[str]:
    """The revisions this code knows (each migration file is named after its own)."""
    return {p.stem for p in (Path(__file__).parent / "migrations" / "versions").glob("*.py")}


async def ensure_schema(db: Database) -> None:
    current = await _stored_revision(db)
    if current == HEAD:
        return
    if current is not None and current not in _known_revisions():
        # A newer gateway migrated this database: this is an old replica
        # during a rolling upgrade. Migrations are additive, so it keeps
        # working (docs/deployment.md); migrating from here would go nowhere.
        log.warning("the database schema is at revision %s, newer than this gateway (%s): running on it; "
                    "upgrade this gateway", current, HEAD)
        return
    if db.is_sqlite:
        await upgrade(db)
        return
    raise SchemaOutOfDate(
        f"the database schema is at revision {current or '(empty)'}, this gateway needs "
        f"{HEAD}: run `llm-gateway migrate` first"
    )
