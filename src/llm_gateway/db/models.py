"""The tables. Ids are time-sortable strings (``ids.new_id``)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from llm_gateway.db.types import Money, UTCDateTime, utcnow


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    email_lower: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(Text, default=None)
    role: Mapped[str] = mapped_column(String(16), default="user")
    is_active: Mapped[bool] = mapped_column(default=True)
    rpm: Mapped[int | None] = mapped_column(default=None)
    tpm: Mapped[int | None] = mapped_column(default=None)
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    balance_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    # The sum of open reservations: what requests in flight may still cost.
    reserved_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    # "<issuer>|<sub>" for users created from an identity provider's token.
    external_subject: Mapped[str | None] = mapped_column(String(512), unique=True, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    rpm: Mapped[int | None] = mapped_column(default=None)
    tpm: Mapped[int | None] = mapped_column(default=None)
    budget_usd: Mapped[Decimal | None] = mapped_column(Money, default=None)
    budget_period: Mapped[str | None] = mapped_column(String(8), default=None)
    # A key minted by a key (``POST /me/keys``): the nearest ancestor key with
    # a budget. This key's spend counts against that budget and the budgets
    # above it too, all in one period (``billing.ledger``).
    budget_key_id: Mapped[str | None] = mapped_column(String(40), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RefreshToken(Base):
    """One issued refresh token. Rotation marks it used; presenting a used one
    again revokes its whole family (every token descended from one login)."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (Index("ix_refresh_tokens_family", "family_id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SystemValue(Base):
    """Process-independent values the gateway generates once (master key hash,
    JWT secret), shared by every worker and instance through the database."""

    __tablename__ = "system_values"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerEntry(Base):
    """Append-only: every credit, charge, refund and adjustment. A user's
    balance always equals the sum of their entries' ``amount_usd``."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_user", "user_id", "id"),
        UniqueConstraint("user_id", "idempotency_key", name="uq_ledger_idempotency"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # credit | charge | refund | adjustment
    amount_usd: Mapped[Decimal] = mapped_column(Money)  # signed: charges are negative
    balance_after_usd: Mapped[Decimal] = mapped_column(Money)
    request_id: Mapped[str | None] = mapped_column(String(128), default=None)
    key_id: Mapped[str | None] = mapped_column(String(40), default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Reservation(Base):
    """Money held for a request in flight. Settling deletes it; one left by a
    crashed process expires and is released by any process's sweeper."""

    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservations_expires", "expires_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key_id: Mapped[str | None] = mapped_column(String(40), default=None)
    period: Mapped[str | None] = mapped_column(String(16), default=None)  # the key budget period held
    # With ``period``: ``key_id`` is the first key whose budget is held, these
    # (space-separated) the others, its budget ancestors.
    shared_key_ids: Mapped[str | None] = mapped_column(Text, default=None)
    amount_usd: Mapped[Decimal] = mapped_column(Money)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KeySpend(Base):
    """A budgeted key's spend and open reservations in one period
    (``2026-11-26`` for a day, ``2026-11`` for a month, UTC)."""

    __tablename__ = "key_spend"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    spent_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    reserved_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))


class UsageRecord(Base):
    """One row per request, written in batches off the hot path."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_created", "created_at"),
        Index("ix_usage_user_created", "user_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str | None] = mapped_column(String(40), default=None)
    key_id: Mapped[str | None] = mapped_column(String(40), default=None)
    model: Mapped[str] = mapped_column(String(200))
    deployment: Mapped[str | None] = mapped_column(String(400), default=None)
    endpoint: Mapped[str] = mapped_column(String(32))
    status: Mapped[int] = mapped_column()
    stream: Mapped[bool] = mapped_column(default=False)
    cache: Mapped[str | None] = mapped_column(String(8), default=None)
    input_tokens: Mapped[int] = mapped_column(default=0)
    cached_input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    latency_ms: Mapped[float] = mapped_column(default=0.0)
    ttft_ms: Mapped[float | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StoredResponse(Base):
    """A ``/v1/responses`` answer kept for its user (``store``, the default)
    until ``expires_at``: the ``response`` object as the client got it and
    every input item the model saw (a continued conversation's earlier
    turns included), so that ``previous_response_id`` needs this row only."""

    __tablename__ = "stored_responses"
    __table_args__ = (Index("ix_stored_responses_expires", "expires_at"),)

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    # ``None`` for the master key's responses.
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), default=None)
    model: Mapped[str] = mapped_column(String(200))
    input_items: Mapped[str] = mapped_column(Text)  # a JSON array
    response: Mapped[str] = mapped_column(Text)  # a JSON object
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


def as_dict(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}
