"""Key families: a key minted by a key shares its maker's budget.

Revision ID: 0003_key_families
Revises: 0002_billing
Create Date: 2026-12-03

Additive only, so that a gateway one revision older keeps running on it:
- ``api_keys.budget_key_id``: the nearest ancestor key with a budget, whose
  budget (and its own ancestors') this key's spend counts against too.
- ``reservations.shared_key_ids``: the further keys (space-separated) whose
  ``key_spend`` a hold counts in, besides ``key_id``. An older gateway
  sweeping such an expired hold releases only ``key_id``'s row; the others
  keep it reserved until the period ends — never an overspend.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_key_families"
down_revision = "0002_billing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("budget_key_id", sa.String(40), nullable=True))
    with op.batch_alter_table("reservations") as batch:
        batch.add_column(sa.Column("shared_key_ids", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reservations") as batch:
        batch.drop_column("shared_key_ids")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("budget_key_id")
