"""Refresh tokens: opaque, stored hashed, rotated on every use; presenting a
spent token again revokes its whole family."""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from llm_gateway.auth.credentials import hash_secret
from llm_gateway.db.models import RefreshToken, User
from llm_gateway.db.types import utcnow
from llm_gateway.errors import AuthenticationFailed
from llm_gateway.ids import new_id

_INVALID = "The refresh token is invalid, expired or already used."


async def issue(session: AsyncSession, user_id: str, ttl_s: int, family_id: str | None = None) -> str:
    token = "rt-" + secrets.token_urlsafe(32)
    session.add(RefreshToken(
        id=new_id("rt"), token_hash=hash_secret(token), family_id=family_id or new_id("fam"), user_id=user_id,
        expires_at=utcnow() + timedelta(seconds=ttl_s),
    ))
    await session.commit()
    return token


async def rotate(session: AsyncSession, token: str, ttl_s: int) -> tuple[User, str]:
    """Spend ``token`` and issue its successor in the same family."""
    row = (
        await session.execute(select(RefreshToken).where(RefreshToken.token_hash == hash_secret(token)))
    ).scalar_one_or_none()
    now = utcnow()
    if row is not None and row.revoked_at is None and row.expires_at <= now:
        raise AuthenticationFailed("The refresh token has expired.", code="token_expired")
    if row is None or row.revoked_at is not None:
        raise AuthenticationFailed(_INVALID, code="invalid_api_key")
    # Spend it atomically: of two concurrent uses, exactly one wins.
    spent = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        # Reuse of a spent token: someone else holds a copy. Revoke the family.
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == row.family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        await session.commit()
        raise AuthenticationFailed(_INVALID, code="invalid_api_key")
    user = await session.get(User, row.user_id)
    if user is None or not user.is_active:
        await session.commit()
        raise AuthenticationFailed(_INVALID, code="invalid_api_key")
    await session.commit()
    return user, await issue(session, user.id, ttl_s, row.family_id)
