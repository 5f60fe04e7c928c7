"""Billing: reserved balance, ledger, reservations, key spend, usage records.

Revision ID: 0002_billing
Revises: 0001_accounts
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from llm_gateway.db.types import Money, UTCDateTime

revision = "0002_billing"
down_revision = "0001_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("reserved_usd", Money(), nullable=False, server_default="0"))
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount_usd", Money(), nullable=False),
        sa.Column("balance_after_usd", Money(), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("user_id", "idempotency_key", name="uq_ledger_idempotency"),
    )
    op.create_index("ix_ledger_user", "ledger_entries", ["user_id", "id"])
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("period", sa.String(16), nullable=True),
        sa.Column("amount_usd", Money(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_reservations_expires", "reservations", ["expires_at"])
    op.create_table(
        "key_spend",
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("period", sa.String(16), primary_key=True),
        sa.Column("spent_usd", Money(), nullable=False),
        sa.Column("reserved_usd", Money(), nullable=False),
    )
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=True),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("deployment", sa.String(400), nullable=True),
        sa.Column("endpoint", sa.String(32), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("cache", sa.String(8), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", Money(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_usage_created", "usage_records", ["created_at"])
    op.create_index("ix_usage_user_created", "usage_records", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_user_created", "usage_records")
    op.drop_index("ix_usage_created", "usage_records")
    op.drop_table("usage_records")
    op.drop_table("key_spend")
    op.drop_index("ix_reservations_expires", "reservations")
    op.drop_table("reservations")
    op.drop_index("ix_ledger_user", "ledger_entries")
    op.drop_table("ledger_entries")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("reserved_usd")
