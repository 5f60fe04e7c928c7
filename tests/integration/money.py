"""Reading the money tables straight from the database, and the set-up the
money tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
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


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """A fake upstream app served on a free port; yields its URL."""
    from tests.fakes.server import serve_in_thread

    server = serve_in_thread(app)
    try:
        yield server.url
    finally:
        server.stop()


def billing_config(upstream: str, database_url: str, folder: Path, **billing: Any) -> dict[str, Any]:
    """The test gateway's config on the fake OpenAI ``upstream``, with a
    ``billing`` section (the money journal in ``folder``)."""
    from tests.conftest import gateway_config

    config = gateway_config({"openai": upstream}, database_url)
    config["billing"] = {"journal_dir": str(folder / "journal"), **billing}
    return config


def user_with_key(base: str, database_url: str | None = None, amount: str = "1000") -> tuple[str, str]:
    """A new user and API key, made through the admin API, funded with
    ``amount`` when ``database_url`` is given."""
    from tests.conftest import AUTH

    user = httpx.post(f"{base}/admin/users", json={"email": f"m{time.time_ns()}@example.com"}, headers=AUTH)
    assert user.status_code == 201, user.text
    key = httpx.post(f"{base}/admin/users/{user.json()['id']}/keys", json={"name": "m"}, headers=AUTH)
    assert key.status_code == 201, key.text
    if database_url is not None:
        credit(database_url, user.json()["id"], amount)
    return user.json()["id"], key.json()["key"]
