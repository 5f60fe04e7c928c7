"""Balances, reservations and the append-only ledger — exact under any
concurrency, on any number of processes and instances.

Every amount is an integer count of nano-dollars in the database. The
invariants, kept by single atomic statements (PostgreSQL) or by ``BEGIN
IMMEDIATE`` transactions on one writer thread (SQLite, ``sqlite_money``):

- ``reserved_usd`` is the sum of the user's open reservations, and
  ``balance_usd - reserved_usd >= 0`` always: a reservation is taken only if
  it fits, a charge never exceeds what is free plus its own reservation.
- ``balance_usd`` equals the sum of the user's ledger entries.
- A budgeted key's spend plus open reservations never exceed its budget.
  A key's spend counts in its own budget's row and in those of the keys it
  was minted from (``shared_budgets``), so a budget binds a key together
  with every key it made; a hold records them all (``key_id`` and
  ``shared_key_ids``) so that settling and sweeping release the same rows.

On PostgreSQL reservations and settlements go through ``pg_money``'s group
commit: concurrent requests share one round trip and one commit. A key with
a budget reserves in a short transaction of its own. A settlement is never
lost to a database outage (``pg_money``: kept, retried, journalled).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Result, make_url
from sqlalchemy.exc import IntegrityError

from llm_gateway.billing import sqlite_money
from llm_gateway.billing.journal import Journal
from llm_gateway.billing.pg_money import PgMoney, Settlement
from llm_gateway.db.engine import Database
from llm_gateway.db.errors import database_unavailable, is_unreachable
from llm_gateway.db.types import NANOS_PER_USD, UTCDateTime, utcnow
from llm_gateway.errors import Conflict, InsufficientQuota, InvalidRequest, NotFound
from llm_gateway.ids import new_id

# The most a balance may hold: its column is a BIGINT of nano-dollars
# (2**63 - 1 ≈ 9.22e9 USD). Credits stop here, so that no sum in a statement
# (a balance plus one amount of at most 1e9 USD) can leave 64 bits: PostgreSQL
# would fail the statement and SQLite would silently turn the sum into a float.
MAX_BALANCE_USD = Decimal(8_000_000_000)
MAX_BALANCE_NANOS = int(MAX_BALANCE_USD * NANOS_PER_USD)


def to_nanos(amount: Decimal, *, round_up: bool = False) -> int:
    scaled = amount * NANOS_PER_USD
    return int(scaled.to_integral_value(ROUND_CEILING) if round_up else scaled.to_integral_value())


def from_nanos(value: int) -> Decimal:
    return Decimal(int(value)) / NANOS_PER_USD


def budget_period(kind: str, now: datetime) -> str:
    return now.strftime("%Y-%m-%d") if kind == "day" else now.strftime("%Y-%m")


@dataclass(frozen=True, slots=True)
class Hold:
    """An open reservation."""

    id: str
    user_id: str
    key_id: str | None  # the key that made the request (its ledger row names it)
    period: str | None
    amount_nanos: int


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    kind: str
    amount_usd: Decimal
    balance_after_usd: Decimal
    created_at: datetime


def _insufficient() -> InsufficientQuota:
    return InsufficientQuota(
        "Your balance is too low for this request. Add credit, or lower max_tokens.", code="insufficient_quota"
    )


def _budget_exceeded(shared: bool) -> InsufficientQuota:
    if shared:
        return InsufficientQuota("This API key, or a key it was made with, has reached its budget for the period "
                                 "(a key made by a key shares its budget).", code="budget_exceeded")
    return InsufficientQuota("This API key has reached its budget for the period.", code="budget_exceeded")


def _too_large() -> InvalidRequest:
    return InvalidRequest(
        f"This credit would take the balance above {MAX_BALANCE_USD:,} USD, the most a balance can hold.",
        code="balance_too_large", param="amount_usd")


class _Replay(Exception):
    def __init__(self, row: Any) -> None:
        self.row = row


_TS = UTCDateTime()

class Ledger:
    def __init__(
        self, db: Database, *, reservation_ttl_s: float = 3600.0, journal_dir: str | None = None,
        journal_after: int = 10_000, settle_wait_s: float = 2.0, synchronous_commit: bool = False,
    ) -> None:
        self.db = db
        self.ttl = timedelta(seconds=reservation_ttl_s)
        self.settle_wait_s = settle_wait_s
        self._pg = db.dialect == "postgresql"
        self._sqlite: sqlite_money.SQLiteWriter | None = None
        self.money: PgMoney | None = None
        if self._pg:
            connect = db.connect_args()
            # The money lanes only (see BillingSettings), whatever the server's default.
            connect["server_settings"] = {**connect.get("server_settings", {}),
                                          "synchronous_commit": "on" if synchronous_commit else "off"}
            self.money = PgMoney(connect, ttl_s=reservation_ttl_s,
                                 journal=Journal(journal_dir or "./data/money-journal"), journal_after=journal_after)
        if db.is_sqlite:
            path = make_url(db.url).database
            if not path or path == ":memory:":
                raise ValueError("billing needs a SQLite database file, not an in-memory database")
            self._sqlite = sqlite_money.SQLiteWriter(path)

    def start(self) -> None:
        if self.money is not None:
            self.money.start()

    async def aclose(self) -> None:
        if self.money is not None:
            await self.money.aclose()
        self.close()

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()

    # ----------------------------------------------------------- reserve

    async def reserve(
        self, user_id: str, amount: Decimal, *, key_id: str | None = None,
        budget_usd: Decimal | None = None, budget_kind: str | None = None,
        shared_budgets: Sequence[tuple[str, Decimal]] = (),
    ) -> Hold:
        """Hold ``amount`` of the user's balance and of the key's budgets (its
        own, ``budget_usd``, and ``shared_budgets``: (key id, USD) of the keys
        it was minted from, all per ``budget_kind``); 402
        ``insufficient_quota`` / ``budget_exceeded`` when it does not fit."""
        amt = to_nanos(amount, round_up=True)
        now = utcnow()
        budgets = dict(shared_budgets)
        if budget_usd is not None and key_id is not None:
            budgets = {key_id: budget_usd} | budgets
        period = budget_period(budget_kind, now) if budgets and budget_kind else None
        kids = tuple(budgets) if period is not None else ()
        limits = [to_nanos(budgets[k]) for k in kids]
        hold = Hold(new_id("res"), user_id, key_id, period, amt)
        # The reservation row: ``key_id`` is the first key whose budget it
        # holds (what a gateway before shared budgets releases), the rest
        # follow in ``shared_key_ids``.
        params = {"amt": amt, "uid": user_id, "rid": hold.id, "kid": kids[0] if kids else key_id,
                  "shared": " ".join(kids[1:]) or None, "period": period, "exp": now + self.ttl, "now": now,
                  "kids": list(kids), "budgets": limits}
        if self.money is not None and period is None:
            if not await self.money.reserve(hold.id, user_id, key_id, amt):
                raise _insufficient()
            return hold
        if self._sqlite is not None:
            try:
                await self._sqlite.run(
                    sqlite_money.reserve, hold.id, user_id, params["kid"], params["shared"], period, amt,
                    list(zip(kids, limits, strict=True)),
                    sqlite_money.sqlite_time(now + self.ttl), sqlite_money.sqlite_time(now))
            except sqlite_money.Refused as refused:
                if refused.reason == "budget":
                    raise _budget_exceeded(bool(shared_budgets)) from None
                raise _insufficient() from None
            return hold
        try:
            await self._reserve_budgeted(params, len(kids), bool(shared_budgets))
        except Exception as exc:
            if is_unreachable(exc):
                raise database_unavailable() from None
            raise
        if self.money is not None:
            self.money.live[hold.id] = None  # renewed while this process lives
        return hold

    async def _reserve_budgeted(self, params: dict[str, Any], n_keys: int, shared: bool) -> None:
        async with self.db.engine.begin() as conn:
            # A budgeted key on PostgreSQL: one short transaction that locks
            # users → key_spend, the order settlement uses too. Every key of a
            # family belongs to one user, so the user's row orders them all.
            taken = await conn.execute(text(
                "UPDATE users SET reserved_usd = reserved_usd + :amt "
                "WHERE id = :uid AND balance_usd - reserved_usd >= :amt"), params)
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                raise _insufficient()
            await conn.execute(text(
                "INSERT INTO key_spend (key_id, period, spent_usd, reserved_usd) "
                "SELECT k, :period, 0, 0 FROM unnest(CAST(:kids AS VARCHAR[])) AS k ON CONFLICT DO NOTHING"), params)
            fits = await conn.execute(text(
                "UPDATE key_spend SET reserved_usd = key_spend.reserved_usd + :amt "
                "FROM unnest(CAST(:kids AS VARCHAR[]), CAST(:budgets AS BIGINT[])) AS b(kid, budget) "
                "WHERE key_spend.key_id = b.kid AND key_spend.period = :period "
                "AND key_spend.spent_usd + key_spend.reserved_usd + :amt <= b.budget"), params)
            if fits.rowcount != n_keys:  # type: ignore[attr-defined]
                raise _budget_exceeded(shared)  # the transaction rolls back the user's hold too
            await conn.execute(text(
                "INSERT INTO reservations (id, user_id, key_id, period, amount_usd, expires_at, created_at, "
                "shared_key_ids) VALUES (:rid, :uid, :kid, :period, :amt, :exp, :now, :shared)").bindparams(
                    bindparam("exp", type_=_TS), bindparam("now", type_=_TS)), params)

    # ------------------------------------------------------------ settle

    async def settle(self, hold: Hold, cost: Decimal, request_id: str) -> Decimal | None:
        """Release the hold and charge ``cost`` (never more than is free, so a
        balance never goes below zero). Returns what was charged, or None when
        the database has not taken the charge within ``settle_wait_s``: it
        stays owed and is retried (PostgreSQL)."""
        cost_n = max(0, to_nanos(cost))
        now = utcnow()
        entry_id = new_id("txn")
        params = {"rid": hold.id, "uid": hold.user_id, "cost": cost_n, "lid": entry_id, "req": request_id,
                  "kid": hold.key_id, "now": now}
        if self.money is not None:
            done = self.money.settle(Settlement(hold.id, hold.user_id, cost_n, entry_id, request_id, hold.key_id))
            try:
                # On time out ``done`` is cancelled: the settlement stays queued.
                async with asyncio.timeout(self.settle_wait_s):
                    charged = await done
            except TimeoutError:
                return None
            return from_nanos(max(charged, 0))
        assert self._sqlite is not None
        charged_n = await self._sqlite.run(
            sqlite_money.settle, hold.id, hold.user_id, hold.key_id, cost_n, params["lid"], request_id,
            sqlite_money.sqlite_time(now))
        return from_nanos(charged_n)

    # ------------------------------------------------------------ credit

    async def credit(
        self, user_id: str, amount: Decimal, *, note: str | None = None, idempotency_key: str | None = None
    ) -> tuple[Entry, bool]:
        """Add (or, negative, take away) credit. Returns the entry and whether
        this call created it: a replay with the same ``idempotency_key``
        returns the first entry, also when both arrive at once."""
        amt = to_nanos(amount)
        if amt == 0:
            raise InvalidRequest("amount_usd must not be zero.", code="invalid_value", param="amount_usd")
        if abs(amt) > MAX_BALANCE_NANOS:
            raise _too_large()
        kind = "credit" if amt > 0 else "adjustment"
        # Both bounds compare the stored values with numbers computed here, so
        # that no sum in the statement can leave 64 bits.
        params: dict[str, Any] = {"uid": user_id, "amt": amt, "neg": -amt, "room": MAX_BALANCE_NANOS - max(amt, 0),
                                  "lid": new_id("txn"), "kind": kind, "note": note, "idem": idempotency_key,
                                  "now": utcnow()}
        try:
            async with self.db.engine.begin() as conn:
                # Write first: takes the user's row lock (and SQLite's lock).
                updated = await conn.execute(text(
                    "UPDATE users SET balance_usd = balance_usd + :amt "
                    "WHERE id = :uid AND balance_usd - reserved_usd >= :neg AND balance_usd <= :room"), params)
                if idempotency_key is not None:
                    existing = await self._existing(conn, user_id, idempotency_key)
                    if existing is not None:
                        raise _Replay(existing)  # rolls back this call's update
                if updated.rowcount != 1:  # type: ignore[attr-defined]
                    now_held = (await conn.execute(text("SELECT balance_usd FROM users WHERE id = :uid"),
                                                   params)).first()
                    if now_held is None:
                        raise NotFound("No such user.", code="user_not_found")
                    if amt > 0 and int(now_held[0]) > params["room"]:
                        raise _too_large()
                    raise Conflict("This adjustment would take the balance below zero (or below what requests "
                                   "in flight hold).", code="insufficient_balance")
                after = (await conn.execute(text("SELECT balance_usd FROM users WHERE id = :uid"), params)).scalar()
                assert after is not None
                await conn.execute(text(
                    "INSERT INTO ledger_entries (id, user_id, kind, amount_usd, balance_after_usd, note, "
                    "idempotency_key, created_at) VALUES (:lid, :uid, :kind, :amt, :after, :note, :idem, :now)"
                ).bindparams(bindparam("now", type_=_TS)), params | {"after": after})
        except _Replay as replay:
            return self._replay(replay.row, amt), False
        except IntegrityError:
            # Another request with the same Idempotency-Key committed first.
            async with self.db.engine.connect() as conn:
                existing = await self._existing(conn, user_id, str(idempotency_key))
            if existing is None:
                raise
            return self._replay(existing, amt), False
        return Entry(params["lid"], kind, from_nanos(amt), from_nanos(int(after)), params["now"]), True

    @staticmethod
    async def _existing(conn: Any, user_id: str, key: str) -> Any:
        result: Result[Any] = await conn.execute(text(
            "SELECT id, kind, amount_usd, balance_after_usd, created_at FROM ledger_entries "
            "WHERE user_id = :uid AND idempotency_key = :idem"
        ).columns(created_at=_TS), {"uid": user_id, "idem": key})
        return result.first()

    @staticmethod
    def _replay(row: Any, amt: int) -> Entry:
        if int(row[2]) != amt:
            raise Conflict("This Idempotency-Key was already used with a different amount.",
                           code="idempotency_key_reused")
        return Entry(row[0], row[1], from_nanos(int(row[2])), from_nanos(int(row[3])), row[4])

    # ------------------------------------------------------------- sweep

    async def sweep(self) -> int:
        """Release reservations whose process died before settling them."""
        released = 0
        async with self.db.engine.begin() as conn:
            rows = (await conn.execute(text(
                "DELETE FROM reservations WHERE expires_at < :now "
                "RETURNING user_id, amount_usd, key_id, period, shared_key_ids"
            ).bindparams(bindparam("now", type_=_TS)), {"now": utcnow()})).all()
            for user_id, amount, key_id, period, shared in rows:
                await conn.execute(text("UPDATE users SET reserved_usd = reserved_usd - :a WHERE id = :u"),
                                   {"a": int(amount), "u": user_id})
                if period is not None:
                    for kid in [key_id, *(shared or "").split()]:
                        await conn.execute(text(
                            "UPDATE key_spend SET reserved_usd = reserved_usd - :a WHERE key_id = :k AND period = :p"),
                            {"a": int(amount), "k": kid, "p": period})
                released += 1
        return released
