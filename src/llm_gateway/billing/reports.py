"""Reading money and usage back: the ledger, the per-request log and usage
reports (SPEC §3, §8).

Reports aggregate in the database (one ``GROUP BY`` query) and add money as
integers of nano-dollars, so totals are exact on SQLite and PostgreSQL
alike. Days are UTC calendar days on both.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import BigInteger, ColumnElement, String, func, literal_column, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from llm_gateway.billing.ledger import from_nanos
from llm_gateway.billing.pricing import format_usd
from llm_gateway.db.models import LedgerEntry, UsageRecord
from llm_gateway.db.paging import page
from llm_gateway.db.types import utcnow
from llm_gateway.errors import InvalidRequest

GroupBy = Literal["day", "model", "user", "key"]
DEFAULT_DAYS = 30
COLUMNS = ("group", "requests", "input_tokens", "cached_input_tokens", "output_tokens", "cost_usd")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SPREADSHEET_FORMULA = ("=", "+", "-", "@", "\t", "\r")


# ------------------------------------------------------------------ filters


def _parse_date(value: str, param: str) -> date:
    if not _ISO_DATE.fullmatch(value):
        raise InvalidRequest(f"{param}: must be an ISO date like 2025-01-31.", code="invalid_value", param=param)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{param}: {value!r} is not a calendar date.", code="invalid_value",
                             param=param) from None


def date_range(start: str | None, end: str | None, *, today: date | None = None) -> tuple[date, date]:
    """``from``/``to`` as inclusive UTC dates. Without them: the last 30 days
    through today; with only one, 30 days from or up to it."""
    today = today or utcnow().date()
    first = _parse_date(start, "from") if start else None
    last = _parse_date(end, "to") if end else None
    if last is None:
        last = today if first is None else max(first, today)
    if first is None:
        try:
            first = last - timedelta(days=DEFAULT_DAYS - 1)
        except OverflowError:
            first = date.min
    if last < first:
        raise InvalidRequest("to: must not be before from.", code="invalid_value", param="to")
    return first, last


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """One report: a date range, an optional filter per dimension, a grouping."""

    start: date
    end: date
    group_by: GroupBy = "day"
    user_id: str | None = None
    key_id: str | None = None
    model: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        where = [UsageRecord.created_at >= _start_of(self.start)]
        if self.end < date.max:
            where.append(UsageRecord.created_at < _start_of(self.end + timedelta(days=1)))
        if self.user_id is not None:
            where.append(UsageRecord.user_id == self.user_id)
        if self.key_id is not None:
            where.append(UsageRecord.key_id == self.key_id)
        if self.model is not None:
            where.append(UsageRecord.model == self.model)
        return where


# ------------------------------------------------------------------ reports


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Sums over one group (``group`` is ``None`` for the whole report, and
    for requests that belong to no user or key: the master key's)."""

    group: str | None
    requests: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_nanos: int

    def as_json(self, *, with_group: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"group": self.group} if with_group else {}
        data.update(requests=self.requests, input_tokens=self.input_tokens,
                    cached_input_tokens=self.cached_input_tokens, output_tokens=self.output_tokens,
                    cost_usd=format_usd(from_nanos(self.cost_nanos)))
        return data


@dataclass(frozen=True, slots=True)
class UsageReport:
    query: UsageQuery
    rows: list[UsageRow]

    @property
    def totals(self) -> UsageRow:
        return UsageRow(None, *(sum(getattr(r, f) for r in self.rows) for f in (
            "requests", "input_tokens", "cached_input_tokens", "output_tokens", "cost_nanos")))

    def as_json(self) -> dict[str, Any]:
        return {"object": "usage_report", "from": self.query.start.isoformat(), "to": self.query.end.isoformat(),
                "group_by": self.query.group_by, "rows": [r.as_json() for r in self.rows],
                "totals": self.totals.as_json(with_group=False)}

    def as_csv(self) -> str:
        """The rows only, under a header of the JSON field names; no totals row
        (a sum over the column is the total). A group that a spreadsheet would
        run as a formula is prefixed with ``'``."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        for row in self.rows:
            group = row.group or ""
            if group.startswith(_SPREADSHEET_FORMULA):
                group = "'" + group
            writer.writerow([group, *(row.as_json(with_group=False).values())])
        return out.getvalue()


def _group_column(group_by: GroupBy, dialect: str) -> ColumnElement[Any] | InstrumentedAttribute[Any]:
    if group_by == "model":
        return UsageRecord.model
    if group_by == "user":
        return UsageRecord.user_id
    if group_by == "key":
        return UsageRecord.key_id
    if dialect == "postgresql":  # timestamptz → the UTC calendar day, whatever the session's time zone
        return type_coerce(func.to_char(func.timezone("UTC", UsageRecord.created_at), "YYYY-MM-DD"), String)
    return type_coerce(func.strftime("%Y-%m-%d", UsageRecord.created_at), String)  # SQLite stores naive UTC


async def usage_report(session: AsyncSession, query: UsageQuery) -> UsageReport:
    """One row per group with traffic (days without any are left out)."""
    dialect = session.get_bind().dialect.name
    # GROUP BY the alias: PostgreSQL would not match the expression with its parameters bound again.
    grp: ColumnElement[Any] = literal_column("grp")
    stmt = (
        select(
            _group_column(query.group_by, dialect).label("grp"),
            func.count().label("requests"),
            func.coalesce(func.sum(UsageRecord.input_tokens), 0),
            func.coalesce(func.sum(UsageRecord.cached_input_tokens), 0),
            func.coalesce(func.sum(UsageRecord.output_tokens), 0),
            # The stored integers, not Money's Decimals: exact sums on both databases.
            func.coalesce(func.sum(type_coerce(UsageRecord.cost_usd, BigInteger)), 0),
        )
        .where(*query.conditions())
        .group_by(grp)
    )
    rows = [UsageRow(g, int(n), int(i), int(c), int(o), int(cost)) for g, n, i, c, o, cost in
            (await session.execute(stmt)).all()]
    rows.sort(key=lambda r: (r.group is None, r.group or ""))
    return UsageReport(query, rows)


# ------------------------------------------------------------------ logs


async def transactions(
    session: AsyncSession, user_id: str, limit: int, after: str | None
) -> tuple[Sequence[LedgerEntry], bool]:
    """A user's ledger, newest first."""
    stmt = select(LedgerEntry).where(LedgerEntry.user_id == user_id)
    return await page(session, stmt, LedgerEntry.id, limit, after)


@dataclass(frozen=True, slots=True)
class RequestQuery:
    user_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    status: int | None = None


async def requests(
    session: AsyncSession, query: RequestQuery, limit: int, after: str | None
) -> tuple[Sequence[UsageRecord], bool]:
    """The per-request log, newest first (usage record ids sort by time)."""
    stmt = select(UsageRecord)
    for column, value in ((UsageRecord.user_id, query.user_id), (UsageRecord.key_id, query.key_id),
                          (UsageRecord.model, query.model), (UsageRecord.status, query.status)):
        if value is not None:
            stmt = stmt.where(column == value)
    return await page(session, stmt, UsageRecord.id, limit, after)
