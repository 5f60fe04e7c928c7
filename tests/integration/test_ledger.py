"""The ledger's money invariants under concurrency, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from llm_gateway.billing.ledger import Ledger
from llm_gateway.db import keys as key_repo
from llm_gateway.db import migrate
from llm_gateway.db import users as user_repo
from llm_gateway.db.engine import Database
from llm_gateway.errors import Conflict, InsufficientQuota
from tests.databases import database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


async def _setup(url: str) -> tuple[Database, Ledger, str]:
    db = Database(url)
    await migrate.ensure_schema(db)
    async with db.session() as session:
        user = await user_repo.create_user(session, email="money@example.com")
    return db, Ledger(db), user.id


async def _totals(db: Database, user_id: str) -> tuple[int, int, int, int]:
    async with db.engine.connect() as conn:
        balance, reserved = (await conn.execute(
            text("SELECT balance_usd, reserved_usd FROM users WHERE id = :u"), {"u": user_id})).one()
        ledger_sum = (await conn.execute(
            text("SELECT COALESCE(SUM(amount_usd), 0) FROM ledger_entries WHERE user_id = :u"), {"u": user_id}
        )).scalar()
        holds = (await conn.execute(text("SELECT COUNT(*) FROM reservations"))).scalar()
    return int(balance), int(reserved), int(ledger_sum or 0), int(holds or 0)


def test_concurrent_reservations_never_overdraw(db_url: str) -> None:
    async def run() -> None:
        db, ledger, uid = await _setup(db_url)
        await ledger.credit(uid, Decimal("5.00"))
        price = Decimal("0.1")

        async def one(i: int) -> Decimal | None:
            try:
                hold = await ledger.reserve(uid, price)
            except InsufficientQuota:
                return None
            await asyncio.sleep(0.001 * (i % 5))
            return await ledger.settle(hold, Decimal("0.07"), f"r{i}")

        results = await asyncio.gather(*(one(i) for i in range(200)))
        charged = [r for r in results if r is not None]
        balance, reserved, ledger_sum, holds = await _totals(db, uid)
        assert reserved == 0 and holds == 0
        assert balance >= 0 and balance == ledger_sum
        assert Decimal(5) - sum(charged, Decimal(0)) == Decimal(balance) / 10**9
        assert 50 <= len(charged) <= 71  # first 50 fit; settlements free room for a few more
        await db.aclose()

    asyncio.run(run())


def test_charge_never_exceeds_free_balance_and_zero_cost_is_not_charged(db_url: str) -> None:
    async def run() -> None:
        db, ledger, uid = await _setup(db_url)
        await ledger.credit(uid, Decimal("1"))
        hold = await ledger.reserve(uid, Decimal("0.5"))
        assert await ledger.settle(hold, Decimal("3"), "over") == Decimal("1")  # capped at the free balance
        balance, reserved, ledger_sum, _ = await _totals(db, uid)
        assert (balance, reserved, ledger_sum) == (0, 0, 0)
        await ledger.credit(uid, Decimal("1"))
        hold = await ledger.reserve(uid, Decimal("0.5"))
        assert await ledger.settle(hold, Decimal("0"), "nothing") == Decimal(0)
        async with db.engine.connect() as conn:
            kinds = (await conn.execute(text("SELECT kind FROM ledger_entries ORDER BY id"))).scalars().all()
        assert kinds == ["credit", "charge", "credit"]
        await db.aclose()

    asyncio.run(run())


def test_idempotent_credits_at_once(db_url: str) -> None:
    async def run() -> None:
        db, ledger, uid = await _setup(db_url)
        results = await asyncio.gather(
            *(ledger.credit(uid, Decimal("2.5"), idempotency_key="same") for _ in range(20)))
        assert len({entry.id for entry, _ in results}) == 1
        assert sum(created for _, created in results) == 1
        balance, _, ledger_sum, _ = await _totals(db, uid)
        assert balance == ledger_sum == 2_500_000_000
        with pytest.raises(Conflict):
            await ledger.credit(uid, Decimal("3"), idempotency_key="same")
        with pytest.raises(Conflict):
            await ledger.credit(uid, Decimal("-10"))  # would go below zero
        await db.aclose()

    asyncio.run(run())


def test_key_budget_holds(db_url: str) -> None:
    async def run() -> None:
        db, ledger, uid = await _setup(db_url)
        async with db.session() as session:
            key, _ = await key_repo.create_key(session, user_id=uid, name="b", budget_usd=Decimal("1"),
                                               budget_period="day")
        await ledger.credit(uid, Decimal("100"))

        async def one(i: int) -> Decimal | None:
            try:
                hold = await ledger.reserve(uid, Decimal("0.3"), key_id=key.id, budget_usd=Decimal("1"),
                                            budget_kind="day")
            except InsufficientQuota as exc:
                assert exc.code == "budget_exceeded"
                return None
            return await ledger.settle(hold, Decimal("0.25"), f"b{i}")

        results = [r for r in await asyncio.gather(*(one(i) for i in range(30))) if r is not None]
        assert sum(results, Decimal(0)) <= Decimal("1")
        assert len(results) >= 3
        balance, reserved, ledger_sum, holds = await _totals(db, uid)
        assert reserved == 0 and holds == 0 and balance == ledger_sum
        await db.aclose()

    asyncio.run(run())


def test_sweeper_releases_expired_holds(db_url: str) -> None:
    async def run() -> None:
        db, _, uid = await _setup(db_url)
        ledger = Ledger(db, reservation_ttl_s=-1)  # born expired, as if its process had died
        await ledger.credit(uid, Decimal("1"))
        await ledger.reserve(uid, Decimal("0.4"))
        assert (await _totals(db, uid))[1] == 400_000_000
        assert await ledger.sweep() == 1
        assert (await _totals(db, uid))[1:] == (0, 1_000_000_000, 0)
        await db.aclose()

    asyncio.run(run())


def test_a_key_family_shares_its_budgets(db_url: str) -> None:
    """Keys minted from a budgeted key spend from its budget together: a hold
    counts in the key's own budget and in every one it shares, settling and
    sweeping release them all, and each charge still names its own key."""
    async def run() -> None:
        db, ledger, uid = await _setup(db_url)
        async with db.session() as session:
            root, _ = await key_repo.create_key(session, user_id=uid, name="root", budget_usd=Decimal("1"),
                                                budget_period="day")
            narrow, _ = await key_repo.create_key(session, user_id=uid, name="narrow", budget_usd=Decimal("0.5"),
                                                  budget_period="day", budget_key_id=root.id)
            plain, _ = await key_repo.create_key(session, user_id=uid, name="plain", budget_key_id=root.id)
            leaf, _ = await key_repo.create_key(session, user_id=uid, name="leaf", budget_key_id=narrow.id)
            shared = {k.id: [(b.key_id, b.budget_usd) for b in await key_repo.budget_chain(session, k.budget_key_id)]
                      for k in (narrow, plain, leaf) if k.budget_key_id is not None}
        assert shared[leaf.id] == [(narrow.id, Decimal("0.5")), (root.id, Decimal("1"))]
        await ledger.credit(uid, Decimal("100"))
        keys = [narrow, plain, leaf]

        async def one(i: int) -> tuple[str, Decimal] | None:
            key = keys[i % len(keys)]
            try:
                hold = await ledger.reserve(uid, Decimal("0.1"), key_id=key.id, budget_usd=key.budget_usd,
                                            budget_kind="day", shared_budgets=shared[key.id])
            except InsufficientQuota as exc:
                assert exc.code == "budget_exceeded"
                return None
            return key.id, await ledger.settle(hold, Decimal("0.09"), f"f{i}")

        results = [r for r in await asyncio.gather(*(one(i) for i in range(60))) if r is not None]
        spent = {k.id: sum((c for kid, c in results if kid == k.id), Decimal(0)) for k in keys}
        assert sum(spent.values()) <= Decimal("1") and spent[narrow.id] + spent[leaf.id] <= Decimal("0.5")
        assert len(results) >= 5
        async with db.engine.connect() as conn:
            rows = {kid: (int(s), int(r)) for kid, s, r in await conn.execute(
                text("SELECT key_id, spent_usd, reserved_usd FROM key_spend"))}
            charged = {kid: -int(a) for kid, a in await conn.execute(text(
                "SELECT key_id, SUM(amount_usd) FROM ledger_entries WHERE kind = 'charge' GROUP BY key_id"))}
        nanos = {k: int(v * 1_000_000_000) for k, v in spent.items()}
        assert rows == {root.id: (sum(nanos.values()), 0), narrow.id: (nanos[narrow.id] + nanos[leaf.id], 0)}
        assert charged == {k: v for k, v in nanos.items() if v}  # each charge names the key that spent it

        # A hold its process never settled is released from every budget it held.
        # (0.01 fits whatever the interleaving above: charges of 0.09 leave at least that.)
        stale = Ledger(db, reservation_ttl_s=-1)
        await stale.reserve(uid, Decimal("0.01"), key_id=leaf.id, budget_kind="day", shared_budgets=shared[leaf.id])
        async with db.engine.connect() as conn:
            assert {int(r) for (r,) in await conn.execute(text("SELECT reserved_usd FROM key_spend"))} == {10_000_000}
        assert await stale.sweep() == 1
        async with db.engine.connect() as conn:
            assert {int(r) for (r,) in await conn.execute(text("SELECT reserved_usd FROM key_spend"))} == {0}
        assert (await _totals(db, uid))[1] == 0
        stale.close()
        await db.aclose()

    asyncio.run(run())
