"""The few reads the dashboard needs beyond the service layer's: sums for
the overview cards, usage by day and model (the charts and the usage
table), a user search, and each deployment's last hour. Each is one
aggregate query over the indexed ``created_at`` (and ``user_id``) columns;
money is summed as the stored integers of nano-dollars, exactly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, String, case, func, literal_column, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from llm_gateway.billing.ledger import from_nanos
from llm_gateway.db.models import UsageRecord, User
from llm_gateway.db.paging import page

_COST = type_coerce(UsageRecord.cost_usd, BigInteger)


def start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _day(dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return type_coerce(func.to_char(func.timezone("UTC", UsageRecord.created_at), "YYYY-MM-DD"), String)
    return type_coerce(func.strftime("%Y-%m-%d", UsageRecord.created_at), String)


def _scope(user_id: str | None, key_id: str | None = None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if user_id is not None:
        where.append(UsageRecord.user_id == user_id)
    if key_id is not None:
        where.append(UsageRecord.key_id == key_id)
    return where


@dataclass(frozen=True, slots=True)
class Summary:
    spend_today: Decimal
    spend_month: Decimal
    requests_month: int
    tokens_month: int
    requests_today: int


async def summary(session: AsyncSession, user_id: str | None, today: date) -> Summary:
    """This month's and today's spend, requests and tokens (UTC)."""
    month = start_of(today.replace(day=1))
    day = start_of(today)
    is_today = UsageRecord.created_at >= day
    stmt = select(
        func.coalesce(func.sum(case((is_today, _COST), else_=0)), 0),
        func.coalesce(func.sum(_COST), 0),
        func.count(),
        func.coalesce(func.sum(UsageRecord.input_tokens + UsageRecord.output_tokens), 0),
        func.coalesce(func.sum(case((is_today, 1), else_=0)), 0),
    ).where(UsageRecord.created_at >= month, *_scope(user_id))
    today_n, month_n, requests, tokens, requests_today = (await session.execute(stmt)).one()
    return Summary(from_nanos(int(today_n)), from_nanos(int(month_n)), int(requests), int(tokens),
                   int(requests_today))


@dataclass(frozen=True, slots=True)
class DayModel:
    day: str
    model: str
    requests: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost: Decimal


async def by_day_and_model(
    session: AsyncSession, start: date, end: date, user_id: str | None, key_id: str | None = None
) -> list[DayModel]:
    """One row per (UTC day, model) with traffic, oldest day first."""
    day = _day(session.get_bind().dialect.name).label("day")
    stmt = (
        select(day, UsageRecord.model, func.count(), func.coalesce(func.sum(UsageRecord.input_tokens), 0),
               func.coalesce(func.sum(UsageRecord.cached_input_tokens), 0),
               func.coalesce(func.sum(UsageRecord.output_tokens), 0), func.coalesce(func.sum(_COST), 0))
        .where(UsageRecord.created_at >= start_of(start), UsageRecord.created_at < start_of(end + timedelta(days=1)),
               *_scope(user_id, key_id))
        .group_by(literal_column("day"), UsageRecord.model)
    )
    rows = [DayModel(str(d), m, int(n), int(i), int(c), int(o), from_nanos(int(cost)))
            for d, m, n, i, c, o, cost in (await session.execute(stmt)).all()]
    rows.sort(key=lambda r: (r.day, r.model))
    return rows


def chart_series(rows: Sequence[DayModel], start: date, end: date) -> dict[str, Any]:
    """Every day of the range (days without traffic as zeros), one dataset
    per model: what the page's charts draw."""
    days = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    index = {d: i for i, d in enumerate(days)}
    models = sorted({r.model for r in rows})
    spend = {m: [0.0] * len(days) for m in models}
    requests = {m: [0] * len(days) for m in models}
    for r in rows:
        i = index.get(r.day)
        if i is not None:
            spend[r.model][i] += float(r.cost)  # (drawn only: the tables show the exact sums)
            requests[r.model][i] += r.requests
    return {"days": days, "models": models, "spend": spend, "requests": requests}


async def balances(session: AsyncSession) -> tuple[Decimal, Decimal, int]:
    """Every user's balance and what in-flight requests hold, summed; and the number of users."""
    stmt = select(func.coalesce(func.sum(type_coerce(User.balance_usd, BigInteger)), 0),
                  func.coalesce(func.sum(type_coerce(User.reserved_usd, BigInteger)), 0), func.count())
    balance, held, users = (await session.execute(stmt)).one()
    return from_nanos(int(balance)), from_nanos(int(held)), int(users)


async def search_users(
    session: AsyncSession, text: str | None, limit: int, after: str | None
) -> tuple[Sequence[User], bool]:
    stmt = select(User)
    if text:
        stmt = stmt.where(User.email_lower.contains(text.lower(), autoescape=True))
    return await page(session, stmt, User.id, limit, after)


async def emails(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, str]:
    if not user_ids:
        return {}
    rows = await session.execute(select(User.id, User.email).where(User.id.in_(list(user_ids))))
    return {uid: email for uid, email in rows.all()}


@dataclass(frozen=True, slots=True)
class DeploymentHour:
    requests: int
    errors: int  # answered 5xx
    avg_latency_ms: float


async def deployments_last_hour(session: AsyncSession, now: datetime) -> dict[str, DeploymentHour]:
    stmt = (
        select(UsageRecord.deployment, func.count(), func.coalesce(func.sum(case((UsageRecord.status >= 500, 1),
                                                                                 else_=0)), 0),
               func.coalesce(func.avg(UsageRecord.latency_ms), 0.0))
        .where(UsageRecord.created_at >= now - timedelta(hours=1), UsageRecord.deployment.is_not(None))
        .group_by(UsageRecord.deployment)
    )
    return {str(d): DeploymentHour(int(n), int(e), float(lat)) for d, n, e, lat in (await session.execute(stmt)).all()}
