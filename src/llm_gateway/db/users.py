"""Users: create, find, list, update."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from llm_gateway.db.models import User
from llm_gateway.db.paging import page
from llm_gateway.errors import Conflict
from llm_gateway.ids import new_id


def normalise_email(email: str) -> str:
    return email.strip().lower()


async def create_user(
    session: AsyncSession,
    *,
    email: str,
    password_hash: str | None = None,
    role: str = "user",
    rpm: int | None = None,
    tpm: int | None = None,
    allowed_models: list[str] | None = None,
    external_subject: str | None = None,
) -> User:
    user = User(
        id=new_id("user"), email=email.strip(), email_lower=normalise_email(email), password_hash=password_hash,
        role=role, is_active=True, rpm=rpm, tpm=tpm, allowed_models=allowed_models,
        external_subject=external_subject,
    )
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"A user with the email {email.strip()!r} already exists.", code="email_taken") from None
    return user


async def get_user(session: AsyncSession, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    return (
        await session.execute(select(User).where(User.email_lower == normalise_email(email)))
    ).scalar_one_or_none()


async def get_by_external_subject(session: AsyncSession, subject: str) -> User | None:
    return (await session.execute(select(User).where(User.external_subject == subject))).scalar_one_or_none()


async def list_users(session: AsyncSession, limit: int, after: str | None) -> tuple[Sequence[User], bool]:
    return await page(session, select(User), User.id, limit, after)


async def update_user(session: AsyncSession, user: User, changes: dict[str, Any]) -> User:
    for name, value in changes.items():
        if name == "email":
            user.email = value.strip()
            user.email_lower = normalise_email(value)
        else:
            setattr(user, name, value)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict("A user with that email already exists.", code="email_taken") from None
    return user
