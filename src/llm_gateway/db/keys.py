"""API keys: create (plaintext returned once), resolve by hash, list, revoke."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from llm_gateway.auth.credentials import display_prefix, generate_key, hash_secret
from llm_gateway.db.models import ApiKey, KeySpend, User
from llm_gateway.db.paging import page
from llm_gateway.db.types import utcnow
from llm_gateway.ids import new_id


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
) -> tuple[ApiKey, str]:
    plaintext = generate_key()
    key = ApiKey(
        id=new_id("key"), user_id=user_id, name=name, prefix=display_prefix(plaintext),
        key_hash=hash_secret(plaintext), allowed_models=allowed_models, rpm=rpm, tpm=tpm,
        budget_usd=budget_usd, budget_period=budget_period, expires_at=expires_at,
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


async def period_spend(session: AsyncSession, key_id: str, period: str) -> Decimal:
    """What a budgeted key has spent, plus what requests in flight hold, in ``period``."""
    row = await session.get(KeySpend, (key_id, period))
    return row.spent_usd + row.reserved_usd if row is not None else Decimal(0)


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
