"""API keys: create (plaintext returned once), resolve by hash, list, revoke, and
the chain of budgets a minted key shares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Integer, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from llm_gateway.auth.credentials import display_prefix, generate_key, hash_secret
from llm_gateway.db.models import ApiKey, User
from llm_gateway.db.paging import page
from llm_gateway.db.types import utcnow
from llm_gateway.ids import new_id

# The most budgets one key's spend counts against (its own and its
# ancestors'): each is a row that every reservation of the key updates.
MAX_BUDGETS = 8


async def create_key(
    session: AsyncSession,
    *,
    user_id: str,
    name: str,
    allowed_models: list[str] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    budget_usd: Decimal | None = None,
    budget_period: str | None = None,
    expires_at: datetime | None = None,
    budget_key_id: str | None = None,
) -> tuple[ApiKey, str]:
    plaintext = generate_key()
    key = ApiKey(
        id=new_id("key"), user_id=user_id, name=name, prefix=display_prefix(plaintext),
        key_hash=hash_secret(plaintext), allowed_models=allowed_models, rpm=rpm, tpm=tpm,
        budget_usd=budget_usd, budget_period=budget_period, expires_at=expires_at, budget_key_id=budget_key_id,
    )
    session.add(key)
    await session.commit()
    return key, plaintext


async def resolve(session: AsyncSession, key_hash: str) -> tuple[ApiKey, User] | None:
    row = (
        await session.execute(
            select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.key_hash == key_hash)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def get_key(session: AsyncSession, key_id: str) -> ApiKey | None:
    return await session.get(ApiKey, key_id)


@dataclass(frozen=True, slots=True)
class Budget:
    """One key's budget: what it and the keys minted from it may spend together."""

    key_id: str
    budget_usd: Decimal
    period: str


async def budget_chain(session: AsyncSession, key_id: str) -> list[Budget]:
    """The budgets a key's spend counts against: its own, if it has one, then
    each budgeted ancestor's (following ``budget_key_id``), nearest first. One
    query, however deep; at most ``MAX_BUDGETS`` are followed."""
    chain = (
        select(ApiKey.id, ApiKey.budget_key_id, ApiKey.budget_usd, ApiKey.budget_period,
               literal(0, Integer).label("depth"))
        .where(ApiKey.id == key_id)
        .cte("chain", recursive=True)
    )
    parent = aliased(ApiKey)
    chain = chain.union_all(
        select(parent.id, parent.budget_key_id, parent.budget_usd, parent.budget_period, chain.c.depth + 1)
        .join(chain, parent.id == chain.c.budget_key_id)
        .where(chain.c.depth < MAX_BUDGETS)
    )
    rows = await session.execute(
        select(chain.c.id, chain.c.budget_usd, chain.c.budget_period)
        .where(chain.c.budget_usd.is_not(None), chain.c.budget_period.is_not(None))
        .order_by(chain.c.depth)
    )
    return [Budget(kid, usd, period) for kid, usd, period in rows][:MAX_BUDGETS]


async def list_keys(
    session: AsyncSession, user_id: str | None, limit: int, after: str | None
) -> tuple[Sequence[ApiKey], bool]:
    stmt = select(ApiKey)
    if user_id is not None:
        stmt = stmt.where(ApiKey.user_id == user_id)
    return await page(session, stmt, ApiKey.id, limit, after)


async def revoke(session: AsyncSession, key: ApiKey) -> ApiKey:
    """Idempotent: the first revocation time is kept."""
    if key.revoked_at is None:
        await session.execute(
            update(ApiKey).where(ApiKey.id == key.id, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
        )
        await session.commit()
        await session.refresh(key)
    return key


async def touch(session: AsyncSession, key_ids: Sequence[str], when: datetime) -> None:
    await session.execute(update(ApiKey).where(ApiKey.id.in_(key_ids)).values(last_used_at=when))
    await session.commit()
