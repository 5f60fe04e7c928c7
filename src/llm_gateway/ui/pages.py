"""The pages every signed-in viewer has: overview, API keys, usage,
requests, balance history and the playground. A user sees their own
account; the master key, which has none, sees the whole gateway."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from llm_gateway import accounts
from llm_gateway.accounts import NewKey
from llm_gateway.api.responses import json_response
from llm_gateway.auth.principal import Principal
from llm_gateway.billing import reports
from llm_gateway.billing.reports import RequestQuery, UsageQuery
from llm_gateway.db.models import UsageRecord, User
from llm_gateway.db.types import utcnow
from llm_gateway.errors import AuthenticationFailed, GatewayError, InvalidRequest, NotFound, PermissionDenied
from llm_gateway.state import GatewayState
from llm_gateway.ui import queries
from llm_gateway.ui import session as sessions
from llm_gateway.ui.web import PREFIX, Ctx, money, redirect, session_keys

log = logging.getLogger("llm_gateway.ui")

PAGE_SIZE = 25
CHART_DAYS = 30


def validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "form"
    return f"{field}: {first['msg'].removeprefix('Value error, ')}"


async def flush_usage(gw: GatewayState) -> None:
    """Write this process's buffered usage records before reading them."""
    try:
        await gw.usage.flush()
    except Exception as exc:
        log.warning("could not write usage records before a page (%s)", type(exc).__name__)


def scope(ctx: Ctx) -> str | None:
    """Whose data the page shows: the user's, or everyone's for the master key."""
    return ctx.viewer.user.id if ctx.viewer.user is not None else None


def valid_id(value: str | None, param: str) -> str | None:
    if value is None:
        return None
    if not accounts.plausible_id(value):
        raise InvalidRequest(f"{param}: not a valid id.", code="invalid_value", param=param)
    return value


async def account_view(ctx: Ctx, user: User | None) -> dict[str, Any]:
    """Cards and charts of one user's account (or, for None, the gateway's)."""
    await flush_usage(ctx.gw)
    today = utcnow().date()
    start = today - timedelta(days=CHART_DAYS - 1)
    if user is not None:
        balance, held, users = user.balance_usd, user.reserved_usd, None
    else:
        balance, held, users = await queries.balances(ctx.db)
    uid = user.id if user is not None else None
    summary = await queries.summary(ctx.db, uid, today)
    rows = await queries.by_day_and_model(ctx.db, start, today, uid)
    return {"balance": balance, "held": held, "users": users, "summary": summary,
            "chart": queries.chart_series(rows, start, today), "start": start, "end": today,
            "models_used": sorted({r.model for r in rows})}


async def overview(ctx: Ctx) -> Response:
    return ctx.render("overview.html", title="Overview", **await account_view(ctx, ctx.viewer.user))


# ---------------------------------------------------------------- keys


def _int(value: str | None, field: str) -> int | None:
    if not value:
        return None
    if not value.isdigit():
        raise InvalidRequest(f"{field}: must be a whole number.", param=field)
    return int(value)


def key_spec(data: dict[str, str]) -> NewKey:
    """The create-key form as the API's ``NewKey`` (same checks, same words)."""
    spec: dict[str, Any] = {"name": data.get("name", "")}
    budget = data.get("budget_usd")
    if budget:
        spec["budget_usd"] = budget
        spec["budget_period"] = data.get("budget_period") or "month"
    for field in ("rpm", "tpm"):
        value = _int(data.get(field), field)
        if value is not None:
            spec[field] = value
    models = [m.strip() for m in data.get("allowed_models", "").split(",") if m.strip()]
    if models:
        spec["allowed_models"] = models
    expires = data.get("expires_at")
    if expires:
        try:
            spec["expires_at"] = datetime.combine(date.fromisoformat(expires), time.max, tzinfo=UTC)
        except ValueError:
            raise InvalidRequest("expires_at: must be a date like 2030-01-31.", param="expires_at") from None
    return NewKey.model_validate(spec)


async def _keys_page(ctx: Ctx, *, created: tuple[Any, str] | None = None, error: str | None = None,
                     form: dict[str, str] | None = None, status: int = 200) -> Response:
    after = ctx.arg("after", 64)
    rows, more = await accounts.list_keys(ctx.db, scope(ctx), PAGE_SIZE, after)
    owners = await queries.emails(ctx.db, sorted({k.user_id for k in rows})) if ctx.viewer.user is None else {}
    return ctx.render("keys.html", status, title="API keys", keys=rows, more=more, owners=owners,
                      created=created, error=error, form=form or {}, now=utcnow(),
                      next_after=rows[-1].id if more and rows else None)


async def keys(ctx: Ctx) -> Response:
    return await _keys_page(ctx, error=None)


async def create_key(ctx: Ctx) -> Response:
    try:
        spec = key_spec(ctx.form)
        if ctx.viewer.user is None:  # the master key makes keys for a user, named by email or id
            owner = await accounts.find_user(ctx.db, ctx.form.get("user", "") or "-")
            created = await accounts.create_key(ctx.db, owner, spec)
        else:
            spec, budget_key = await accounts.narrow_for_caller(ctx.db, spec, ctx.viewer.user,
                                                                ctx.viewer.principal.key_id)
            created = await accounts.create_key(ctx.db, ctx.viewer.user, spec, budget_key_id=budget_key)
    except ValidationError as exc:
        return await _keys_page(ctx, error=validation_message(exc), form=ctx.form, status=400)
    except GatewayError as exc:
        return await _keys_page(ctx, error=exc.message, form=ctx.form, status=exc.status_code)
    return await _keys_page(ctx, created=created, status=201)


async def revoke_key(ctx: Ctx) -> Response:
    key = await accounts.get_key(ctx.db, ctx.request.path_params["key_id"], user_id=scope(ctx))
    await accounts.revoke_key(ctx.db, ctx.gw.auth.bus, key)
    return redirect(PREFIX + "/keys", msg="revoked")


# ---------------------------------------------------------------- usage


def _range(ctx: Ctx) -> tuple[date, date]:
    return reports.date_range(ctx.arg("from", 32), ctx.arg("to", 32))


async def usage(ctx: Ctx) -> Response:
    start, end = _range(ctx)
    key_id = valid_id(ctx.arg("key_id", 64), "key_id")
    await flush_usage(ctx.gw)
    rows = await queries.by_day_and_model(ctx.db, start, end, scope(ctx), key_id)
    totals = {f: sum(getattr(r, f) for r in rows) for f in
              ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "cost")}
    key_list, _ = await accounts.list_keys(ctx.db, scope(ctx), 100, None)
    return ctx.render("usage.html", title="Usage", rows=rows, totals=totals, start=start, end=end,
                      key_id=key_id, keys=key_list)


async def usage_csv(ctx: Ctx) -> Response:
    """The API's usage report (``/me/usage?format=csv``), by day."""
    start, end = _range(ctx)
    key_id = valid_id(ctx.arg("key_id", 64), "key_id")
    await flush_usage(ctx.gw)
    report = await reports.usage_report(ctx.db, UsageQuery(start, end, "day", scope(ctx), key_id))
    name = f"usage-{start.isoformat()}-{end.isoformat()}-by-day.csv"
    return Response(report.as_csv(), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{name}"', "cache-control": "no-store",
                             "x-content-type-options": "nosniff"})


# ---------------------------------------------------------------- requests


async def requests_page(ctx: Ctx) -> Response:
    status_arg = ctx.arg("status", 3)
    status = int(status_arg) if status_arg and status_arg.isdigit() else None
    model = ctx.arg("model")
    key_id = valid_id(ctx.arg("key_id", 64), "key_id")
    after = accounts.check_after(ctx.arg("after", 64))
    await flush_usage(ctx.gw)
    rows, more = await reports.requests(ctx.db, RequestQuery(scope(ctx), key_id, model, status), PAGE_SIZE, after)
    owners = await queries.emails(ctx.db, sorted({r.user_id for r in rows if r.user_id})) \
        if ctx.viewer.user is None else {}
    filters = {"model": model, "status": status_arg, "key_id": key_id}
    key_list, _ = await accounts.list_keys(ctx.db, scope(ctx), 100, None)
    return ctx.render("requests.html", title="Requests", rows=rows, more=more, owners=owners, filters=filters,
                      models=sorted(ctx.gw.router.models), keys=key_list, first_page=after is None,
                      next_after=rows[-1].id if more and rows else None)


async def request_detail(ctx: Ctx) -> Response:
    record_id = ctx.request.path_params["record_id"]
    record = await ctx.db.get(UsageRecord, record_id) if accounts.plausible_id(record_id) else None
    if record is None or not (ctx.viewer.is_admin or record.user_id == scope(ctx)):
        raise NotFound("No such request.")
    owner = (await queries.emails(ctx.db, [record.user_id])).get(record.user_id) if record.user_id else None
    return ctx.render("request.html", title="Request", r=record, owner=owner)


# ---------------------------------------------------------------- balance


async def balance(ctx: Ctx) -> Response:
    user = ctx.viewer.user
    if user is None:
        return ctx.render("balance.html", title="Balance history", user=None, rows=[], more=False)
    after = accounts.check_after(ctx.arg("after", 64))
    rows, more = await reports.transactions(ctx.db, user.id, PAGE_SIZE, after)
    return ctx.render("balance.html", title="Balance history", user=user, rows=rows, more=more,
                      first_page=after is None, next_after=rows[-1].id if more and rows else None)


# ---------------------------------------------------------------- playground


async def playground(ctx: Ctx) -> Response:
    models = [name for name, m in ctx.gw.router.models.items()
              if m.mode == "chat" and ctx.viewer.principal.may_use(name)]
    return ctx.render("playground.html", title="Playground", models=models)


async def playground_principal(request: Request, gw: GatewayState) -> Principal:
    """The caller of ``POST /ui/playground/chat``: the session's principal,
    for a write from this site that carries the session's CSRF token. The
    session cookie itself is never a credential for ``/v1``."""
    async with gw.db.session() as db:
        viewer = await sessions.viewer(gw, session_keys(request), db, request.cookies.get(sessions.COOKIE))
    if viewer is None:
        raise AuthenticationFailed("Your dashboard session has ended: sign in again.")
    if not sessions.same_origin(request) or not sessions.csrf_ok(viewer.csrf, request.headers.get("x-csrf-token")):
        raise PermissionDenied("The CSRF token is missing or wrong.", code="csrf_failed")
    return viewer.principal



async def account_json(ctx: Ctx) -> Response:
    """The balance in the page header, refreshed after a playground call."""
    user = ctx.viewer.user
    if user is not None:
        await ctx.db.refresh(user)
    body = {"balance": money(user.balance_usd) if user else None, "held": money(user.reserved_usd) if user else None}
    return json_response(body, headers={"cache-control": "no-store"})
