"""Money and usage over HTTP (SPEC §3, §8): credits and the ledger,
``/admin/usage`` and ``/me/usage`` reports, and the per-request log.

Usage records are written in batches a quarter of a second apart; every
read here first writes what this process still holds, so a report includes
every request this process finished before it. (With several workers, a
request another worker finished less than ~0.25 s ago may still be in that
worker's buffer.)
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from llm_gateway import accounts
from llm_gateway.api.deps import DEFAULT_PAGE, AdminPrincipal, After, CurrentPrincipal, Gateway, Limit, Session
from llm_gateway.billing import reports
from llm_gateway.billing.pricing import format_usd
from llm_gateway.billing.reports import GroupBy, RequestQuery, UsageQuery
from llm_gateway.db.models import LedgerEntry, UsageRecord
from llm_gateway.errors import InvalidRequest, NotFound
from llm_gateway.state import GatewayState

log = logging.getLogger("llm_gateway.billing")

router = APIRouter(tags=["billing"])

MAX_CREDIT_USD = accounts.MAX_AMOUNT_USD  # so that no sum of two leaves the BIGINT of nano-dollars
MAX_NOTE = 1000
MAX_IDEMPOTENCY_KEY = 255


# ---------------------------------------------------------------- inputs


def _non_zero(value: Decimal) -> Decimal:
    if value == 0:
        raise ValueError("must not be zero")
    return value


AmountUSD = Annotated[
    Decimal,
    BeforeValidator(accounts.decimal_text),
    Field(ge=-MAX_CREDIT_USD, le=MAX_CREDIT_USD, decimal_places=9, allow_inf_nan=False),
    AfterValidator(_non_zero),
]


class NewCredit(BaseModel):
    """``POST /admin/users/{id}/credits`` and ``llm-gateway users credit``:
    a positive amount is a credit, a negative one an adjustment."""

    model_config = ConfigDict(extra="forbid")

    amount_usd: AmountUSD
    note: Annotated[str, Field(strict=True, max_length=MAX_NOTE), AfterValidator(accounts.storable)] | None = None


# ---------------------------------------------------------------- outputs


class CreditOut(BaseModel):
    transaction_id: str
    kind: str
    amount_usd: str
    balance_usd: str  # the balance right after this transaction
    created_at: datetime


class LedgerEntryOut(BaseModel):
    id: str
    object: Literal["ledger_entry"] = "ledger_entry"
    kind: str
    amount_usd: str
    balance_after_usd: str
    created_at: datetime
    request_id: str | None
    key_id: str | None
    note: str | None

    @classmethod
    def of(cls, row: LedgerEntry) -> LedgerEntryOut:
        return cls(id=row.id, kind=row.kind, amount_usd=format_usd(row.amount_usd),
                   balance_after_usd=format_usd(row.balance_after_usd), created_at=row.created_at,
                   request_id=row.request_id, key_id=row.key_id, note=row.note)


class LedgerList(BaseModel):
    object: Literal["list"] = "list"
    data: list[LedgerEntryOut]
    has_more: bool
    last_id: str | None


class RequestOut(BaseModel):
    id: str
    object: Literal["request"] = "request"
    request_id: str
    user_id: str | None
    key_id: str | None
    model: str
    deployment: str | None
    endpoint: str
    status: int
    stream: bool
    cache: str | None
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_usd: str
    latency_ms: float
    ttft_ms: float | None
    created_at: datetime

    @classmethod
    def of(cls, row: UsageRecord) -> RequestOut:
        return cls(id=row.id, request_id=row.request_id, user_id=row.user_id, key_id=row.key_id, model=row.model,
                   deployment=row.deployment, endpoint=row.endpoint, status=row.status, stream=row.stream,
                   cache=row.cache, input_tokens=row.input_tokens, cached_input_tokens=row.cached_input_tokens,
                   output_tokens=row.output_tokens, cost_usd=format_usd(row.cost_usd),
                   latency_ms=round(row.latency_ms, 3),
                   ttft_ms=round(row.ttft_ms, 3) if row.ttft_ms is not None else None, created_at=row.created_at)


class RequestList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RequestOut]
    has_more: bool
    last_id: str | None


class UsageTotals(BaseModel):
    requests: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_usd: str


class UsageGroup(UsageTotals):
    group: str | None


class UsageReportOut(BaseModel):
    object: Literal["usage_report"] = "usage_report"
    from_: str = Field(alias="from")
    to: str
    group_by: str
    rows: list[UsageGroup]
    totals: UsageTotals


# ---------------------------------------------------------------- helpers


IdFilter = Annotated[str | None, Query(max_length=accounts.MAX_ID)]
ModelFilter = Annotated[str | None, Query(max_length=accounts.MAX_NAME)]
DateParam = Annotated[str | None, Query(max_length=32, description="ISO date (UTC), inclusive")]
Format = Literal["json", "csv"]


def _id_filter(value: str | None, param: str) -> str | None:
    """``?user_id=`` alone means no filter; an id that cannot exist is a 400."""
    if not value:
        return None
    if not accounts.plausible_id(value):
        raise InvalidRequest(f"{param}: not a valid id.", code="invalid_value", param=param)
    return value


def _model_filter(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return accounts.storable(value)
    except ValueError as exc:
        raise InvalidRequest(f"model: {exc}.", code="invalid_value", param="model") from None


async def _flush(gw: GatewayState) -> None:
    """Write this process's buffered usage records before reading them (also
    waits for a batch the background writer is writing now)."""
    try:
        await gw.usage.flush()
    except Exception as exc:  # the report is then at most a moment behind
        log.warning("could not write usage records before a report (%s)", type(exc).__name__)


async def _report(
    gw: GatewayState, session: Session, query: UsageQuery, fmt: Format
) -> Response | dict[str, Any]:
    await _flush(gw)
    report = await reports.usage_report(session, query)
    if fmt == "csv":
        name = f"usage-{query.start.isoformat()}-{query.end.isoformat()}-by-{query.group_by}.csv"
        return Response(report.as_csv(), media_type="text/csv; charset=utf-8",
                        headers={"content-disposition": f'attachment; filename="{name}"'})
    return report.as_json()


# ---------------------------------------------------------------- routes


@router.post("/admin/users/{user_id}/credits", status_code=201, response_model=CreditOut)
async def credit(
    user_id: str, body: NewCredit, response: Response, gw: Gateway, _admin: AdminPrincipal,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=MAX_IDEMPOTENCY_KEY)] = None,
) -> CreditOut:
    """201 with the new transaction; a replay of the same ``Idempotency-Key``
    answers 200 with the first one (and the balance right after it), also
    when both arrive at once; the same key with another amount is 409."""
    if not accounts.plausible_id(user_id):
        raise NotFound(f"No user with id {user_id!r}.", code="user_not_found", param="id")
    entry, created = await gw.ledger.credit(
        user_id, body.amount_usd, note=body.note, idempotency_key=idempotency_key or None)
    if not created:
        response.status_code = 200
    return CreditOut(transaction_id=entry.id, kind=entry.kind, amount_usd=format_usd(entry.amount_usd),
                     balance_usd=format_usd(entry.balance_after_usd), created_at=entry.created_at)


@router.get("/admin/users/{user_id}/transactions", response_model=LedgerList)
async def list_transactions(
    user_id: str, session: Session, _admin: AdminPrincipal, limit: Limit = DEFAULT_PAGE, after: After = None
) -> LedgerList:
    user = await accounts.get_user(session, user_id)
    rows, more = await reports.transactions(session, user.id, limit, accounts.check_after(after))
    return LedgerList(data=[LedgerEntryOut.of(r) for r in rows], has_more=more,
                      last_id=rows[-1].id if rows else None)


@router.get("/admin/usage", response_model=UsageReportOut, response_model_by_alias=True)
async def admin_usage(
    gw: Gateway, session: Session, _admin: AdminPrincipal,
    from_: Annotated[DateParam, Query(alias="from")] = None, to: DateParam = None,
    user_id: IdFilter = None, key_id: IdFilter = None, model: ModelFilter = None,
    group_by: GroupBy = "day", format: Format = "json",
) -> Response | dict[str, Any]:
    """Every user's usage (or one user's, key's or model's), summed per
    group; ``format=csv`` for a spreadsheet."""
    start, end = reports.date_range(from_, to)
    query = UsageQuery(start, end, group_by, _id_filter(user_id, "user_id"), _id_filter(key_id, "key_id"),
                       _model_filter(model))
    return await _report(gw, session, query, format)


@router.get("/me/usage", response_model=UsageReportOut, response_model_by_alias=True)
async def my_usage(
    gw: Gateway, session: Session, principal: CurrentPrincipal,
    from_: Annotated[DateParam, Query(alias="from")] = None, to: DateParam = None,
    key_id: IdFilter = None, model: ModelFilter = None,
    group_by: GroupBy = "day", format: Format = "json",
) -> Response | dict[str, Any]:
    """The caller's own usage: always filtered to the caller's user."""
    if principal.user_id is None:
        raise NotFound("The master key belongs to no user: /me/usage needs a user's API key or access token "
                       "(see /admin/usage).", code="user_not_found")
    start, end = reports.date_range(from_, to)
    query = UsageQuery(start, end, group_by, principal.user_id, _id_filter(key_id, "key_id"),
                       _model_filter(model))
    return await _report(gw, session, query, format)


@router.get("/admin/requests", response_model=RequestList)
async def list_requests(
    gw: Gateway, session: Session, _admin: AdminPrincipal, limit: Limit = DEFAULT_PAGE, after: After = None,
    user_id: IdFilter = None, key_id: IdFilter = None, model: ModelFilter = None,
    status: Annotated[int | None, Query(ge=100, le=599, description="HTTP status the client got")] = None,
) -> RequestList:
    """One row per request (success, refusal or failure), newest first."""
    await _flush(gw)
    query = RequestQuery(_id_filter(user_id, "user_id"), _id_filter(key_id, "key_id"), _model_filter(model), status)
    rows, more = await reports.requests(session, query, limit, accounts.check_after(after))
    return RequestList(data=[RequestOut.of(r) for r in rows], has_more=more, last_id=rows[-1].id if rows else None)
