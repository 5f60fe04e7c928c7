"""A settlement retried after a broken connection finds its reservation gone
and no ledger entry: charge it (what is free), instead of taking it as done.

Revision ID: 0006_retried_settlements
Revises: 0005_stored_responses
Create Date: 2026-12-03

0004 took such a settlement as committed by its first attempt. With
``billing.synchronous_commit`` off, a crash of the PostgreSQL server can lose
that attempt together with the reservation it released, and the charge was
dropped. The ledger entry's id (checked first) already guards against
charging twice: a first attempt that charged left that entry, and one that
charged nothing (a zero cost) charges nothing again. Only the function
changes, so a gateway one revision older keeps running on it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0006_retried_settlements"
down_revision = "0005_stored_responses"
branch_labels = None
depends_on = None


def _function_0004() -> str:
    spec = importlib.util.spec_from_file_location("money_batches_0004",
                                                  Path(__file__).with_name("0004_money_batches.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.FUNCTION)


# 0004's function with one branch changed: a missing reservation is charged
# whether or not the settlement is a retry.
_TAKEN_AS_DONE = """
        IF NOT FOUND THEN
            IF s_retry[i] THEN
                result := result || (-1)::bigint;
                CONTINUE;
            END IF;
            held := 0;"""
_CHARGED = """
        IF NOT FOUND THEN
            -- Swept, or lost with the database's last writes: charge what is free.
            held := 0;"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        function = _function_0004()
        assert _TAKEN_AS_DONE in function
        op.execute(function.replace(_TAKEN_AS_DONE, _CHARGED))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_function_0004())
