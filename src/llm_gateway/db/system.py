"""Values generated once and shared through the database."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from llm_gateway.db.models import SystemValue


async def get_value(session: AsyncSession, name: str) -> str | None:
    return (await session.execute(select(SystemValue.value).where(SystemValue.name == name))).scalar_one_or_none()


async def get_or_create(session: AsyncSession, name: str, make: Callable[[], str]) -> tuple[str, bool]:
    """The stored value, creating it when absent. Safe when several processes
    start at once: exactly one insert wins and everyone reads the winner's.
    Returns ``(value, created_by_this_call)``."""
    candidate = make()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(SystemValue).values(name=name, value=candidate).on_conflict_do_nothing(index_elements=["name"])
    await session.execute(stmt)
    await session.commit()
    value = await get_value(session, name)
    assert value is not None
    return value, value == candidate
