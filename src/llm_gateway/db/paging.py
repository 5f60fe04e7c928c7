"""OpenAI-style lists: newest first, ``?limit=`` and ``?after=<id>``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


async def page(
    session: AsyncSession, stmt: Select[Any], id_column: Any, limit: int, after: str | None
) -> tuple[Sequence[T], bool]:
    """Rows newest first (ids sort by creation time), and whether more follow."""
    if after:
        stmt = stmt.where(id_column < after)
    rows: Sequence[T] = (await session.execute(stmt.order_by(id_column.desc()).limit(limit + 1))).scalars().all()
    return rows[:limit], len(rows) > limit
