"""What the admin and self-service APIs answer: users, keys and SPEC §8's
lists. Never a password hash or a key hash; the full key only in
``KeyCreated``, once. Money is a decimal string, times ISO-8601 UTC."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from llm_gateway.billing.pricing import format_usd
from llm_gateway.db.models import ApiKey, User


class UserOut(BaseModel):
    id: str
    object: Literal["user"] = "user"
    email: str
    role: str
    is_active: bool
    rpm: int | None
    tpm: int | None
    allowed_models: list[str] | None
    balance_usd: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id, email=user.email, role=user.role, is_active=user.is_active, rpm=user.rpm, tpm=user.tpm,
            allowed_models=user.allowed_models, balance_usd=format_usd(user.balance_usd),
            created_at=user.created_at, updated_at=user.updated_at,
        )


class KeyOut(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str
    user_id: str
    allowed_models: list[str] | None
    rpm: int | None
    tpm: int | None
    budget_usd: str | None
    budget_period: str | None
    # The key whose budget this one shares (a key minted by a key): its spend
    # counts against that budget too. ``budget_usd`` is then its own, if any.
    budget_key_id: str | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(
            id=key.id, name=key.name, prefix=key.prefix, user_id=key.user_id, allowed_models=key.allowed_models,
            rpm=key.rpm, tpm=key.tpm, budget_usd=format_usd(key.budget_usd) if key.budget_usd is not None else None,
            budget_period=key.budget_period, budget_key_id=key.budget_key_id, expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            last_used_at=key.last_used_at, created_at=key.created_at,
        )


class KeyCreated(KeyOut):
    """The answer to creating a key: the only time ``key`` is ever shown."""

    key: str

    @classmethod
    def created(cls, key: ApiKey, plaintext: str) -> KeyCreated:
        return cls(**KeyOut.of(key).model_dump(), key=plaintext)


class UserList(BaseModel):
    object: Literal["list"] = "list"
    data: list[UserOut]
    has_more: bool
    last_id: str | None

    @classmethod
    def of(cls, users: Sequence[User], has_more: bool) -> UserList:
        return cls(data=[UserOut.of(u) for u in users], has_more=has_more, last_id=users[-1].id if users else None)


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyOut]
    has_more: bool
    last_id: str | None

    @classmethod
    def of(cls, keys: Sequence[ApiKey], has_more: bool) -> KeyList:
        return cls(data=[KeyOut.of(k) for k in keys], has_more=has_more, last_id=keys[-1].id if keys else None)
