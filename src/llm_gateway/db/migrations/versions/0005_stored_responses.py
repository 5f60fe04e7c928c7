"""Stored responses: ``/v1/responses`` answers kept for ``previous_response_id``.

Revision ID: 0005_stored_responses
Revises: 0004_money_batches
Create Date: 2026-12-04

Additive only (a new table), so a gateway one revision older keeps running
on it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from llm_gateway.db.types import UTCDateTime

revision = "0005_stored_responses"
down_revision = "0004_money_batches"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stored_responses",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("input_items", sa.Text(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_stored_responses_expires", "stored_responses", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_stored_responses_expires", table_name="stored_responses")
    op.drop_table("stored_responses")
