"""Reading the money tables straight from the database, for tests."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import text

from llm_gateway.billing.ledger import Ledger
from llm_gateway.db.engine import Database

NANO = Decimal(1_000_000_000)


@dataclass
class Books:
    balance: Decimal
    reserved: Decimal
    ledger_sum: Decimal
    open_holds: int
    charges: dict[str, Decimal]  # request id -> amount charged (positive)
    credits: Decimal


def books(database_url: str, user_id: str) -> Books:
    async def run() -> Books:
        db = Database(database_url)
        try:
            async with db.engine.connect() as conn:
                balance, reserved = (await conn.execute(
                    text("SELECT balance_usd, reserved_usd FROM users WHERE id = :u"), {"u": user_id})).one()
                rows = (await conn.execute(text(
                    "SELECT kind, amount_usd, request_id FROM ledger_entries WHERE user_id = :u"), {"u": user_id}
                )).all()
                holds = (await conn.execute(
                    text("SELECT COUNT(*) FROM reservations WHERE user_id = :u"), {"u": user_id})).scalar()
        finally:
            await db.aclose()
        charges: dict[str, Decimal] = {}
        for kind, amount, request_id in rows:
            if kind == "charge":
                assert request_id not in charges, f"request {request_id} charged twice"
                charges[request_id] = -Decimal(int(amount)) / NANO
        return Books(
            balance=Decimal(int(balance)) / NANO, reserved=Decimal(int(reserved)) / NANO,
            ledger_sum=sum((Decimal(int(a)) / NANO for _, a, _ in rows), Decimal(0)), open_holds=int(holds or 0),
            charges=charges,
            credits=sum((Decimal(int(a)) / NANO for k, a, _ in rows if k in ("credit", "adjustment")), Decimal(0)),
        )

    return asyncio.run(run())


def settled(database_url: str, user_id: str, timeout_s: float = 5.0) -> Books:
    """The user's books once no request holds money any more (settlements
    run in the background), or as they are after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        b = books(database_url, user_id)
        if (b.open_holds == 0 and b.reserved == 0) or time.monotonic() > deadline:
            return b
        time.sleep(0.05)


def credit(database_url: str, user_id: str, amount: str) -> None:
    async def run() -> None:
        db = Database(database_url)
        try:
            await Ledger(db).credit(user_id, Decimal(amount))
        finally:
            await db.aclose()

    asyncio.run(run())
