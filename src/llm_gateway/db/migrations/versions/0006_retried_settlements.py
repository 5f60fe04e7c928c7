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

FUNCTION = """
CREATE OR REPLACE FUNCTION gw_money_batch(
    s_ids text[], s_users text[], s_costs bigint[], s_lids text[], s_reqs text[], s_keys text[],
    s_retry boolean[],
    r_ids text[], r_users text[], r_keys text[], r_amts bigint[],
    r_exp timestamptz, t_now timestamptz)
RETURNS bigint[]
LANGUAGE plpgsql AS $fn$
DECLARE
    result bigint[] := '{}';
    i integer;
    held bigint;
    bal bigint;
    res bigint;
    charged bigint;
    h_key text;
    h_period text;
    h_shared text;
BEGIN
    PERFORM 1 FROM users WHERE id = ANY(s_users || r_users) ORDER BY id FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(s_ids, 1), 0) LOOP
        IF EXISTS (SELECT 1 FROM ledger_entries WHERE id = s_lids[i]) THEN
            result := result || (-1)::bigint;
            CONTINUE;
        END IF;
        DELETE FROM reservations WHERE id = s_ids[i]
            RETURNING amount_usd, key_id, period, shared_key_ids INTO held, h_key, h_period, h_shared;
        IF NOT FOUND THEN
            -- Swept, or lost with the database's last writes: charge what is free.
            held := 0;
            h_period := NULL;
        END IF;
        SELECT balance_usd, reserved_usd INTO bal, res FROM users WHERE id = s_users[i];
        IF NOT FOUND THEN
            result := result || 0::bigint;
            CONTINUE;
        END IF;
        charged := GREATEST(0, LEAST(s_costs[i], bal - res + held));
        UPDATE users SET balance_usd = balance_usd - charged, reserved_usd = reserved_usd - held
            WHERE id = s_users[i];
        IF h_period IS NOT NULL THEN
            UPDATE key_spend SET spent_usd = spent_usd + charged, reserved_usd = reserved_usd - held
                WHERE period = h_period
                  AND key_id = ANY(array_prepend(h_key, string_to_array(COALESCE(h_shared, ''), ' ')));
        END IF;
        IF charged > 0 THEN
            INSERT INTO ledger_entries (id, user_id, kind, amount_usd, balance_after_usd, request_id, key_id,
                                        created_at)
                VALUES (s_lids[i], s_users[i], 'charge', -charged, bal - charged, s_reqs[i], s_keys[i], t_now);
        END IF;
        result := result || charged;
    END LOOP;
    FOR i IN 1 .. coalesce(array_length(r_ids, 1), 0) LOOP
        UPDATE users SET reserved_usd = reserved_usd + r_amts[i]
            WHERE id = r_users[i] AND balance_usd - reserved_usd >= r_amts[i];
        IF FOUND THEN
            INSERT INTO reservations (id, user_id, key_id, period, amount_usd, expires_at, created_at)
                VALUES (r_ids[i], r_users[i], r_keys[i], NULL, r_amts[i], r_exp, t_now);
            result := result || 1::bigint;
        ELSE
            result := result || 0::bigint;
        END IF;
    END LOOP;
    RETURN result;
END
$fn$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        spec = importlib.util.spec_from_file_location("money_batches_0004",
                                                      Path(__file__).with_name("0004_money_batches.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        op.execute(module.FUNCTION)
