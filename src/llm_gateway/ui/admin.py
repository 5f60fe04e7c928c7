"""Admin pages (the master key or an admin user; anyone else gets 403):
users, one user's account as they see it, spend per user and model, and
the models with each deployment's health."""

from __future__ import annotations

import secrets
import time
from typing import Any

from pydantic import ValidationError
from starlette.responses import Response

from llm_gateway import accounts
from llm_gateway.accounts import NewUser, UserChanges
from llm_gateway.api.billing import NewCredit
from llm_gateway.billing import reports
from llm_gateway.billing.reports import UsageQuery
from llm_gateway.db.types import utcnow
from llm_gateway.errors import GatewayError
from llm_gateway.routing.breaker import CLOSED, HALF_OPEN
from llm_gateway.ui import queries
from llm_gateway.ui.pages import PAGE_SIZE, account_view, flush_usage, validation_message
from llm_gateway.ui.web import PREFIX, Ctx, redirect

STATES = {CLOSED: "closed", HALF_OPEN: "half-open"}


async def _users_page(ctx: Ctx, *, error: str | None = None, status: int = 200) -> Response:
    q = ctx.arg("q")
    after = accounts.check_after(ctx.arg("after", 64))
    rows, more = await queries.search_users(ctx.db, q, PAGE_SIZE, after)
    return ctx.render("admin_users.html", status, title="Users", users=rows, more=more, q=q, error=error,
                      form=ctx.form, first_page=after is None, next_after=rows[-1].id if more and rows else None)


async def users(ctx: Ctx) -> Response:
    return await _users_page(ctx)


async def create_user(ctx: Ctx) -> Response:
    spec: dict[str, Any] = {"email": ctx.form.get("email", ""), "role": ctx.form.get("role") or "user"}
    if ctx.form.get("password"):
        spec["password"] = ctx.form["password"]
    try:
        user = await accounts.create_user(ctx.db, NewUser.model_validate(spec))
    except ValidationError as exc:
        return await _users_page(ctx, error=validation_message(exc), status=400)
    except GatewayError as exc:
        return await _users_page(ctx, error=exc.message, status=exc.status_code)
    return redirect(f"{PREFIX}/admin/users/{user.id}", msg="user_created")


async def user_detail(ctx: Ctx, *, error: str | None = None, status: int = 200) -> Response:
    user = await accounts.get_user(ctx.db, ctx.request.path_params["user_id"])
    view = await account_view(ctx, user)
    keys, _ = await accounts.list_keys(ctx.db, user.id, 50, None)
    ledger, more = await reports.transactions(ctx.db, user.id, 10, None)
    usage = await queries.by_day_and_model(ctx.db, view["start"], view["end"], user.id)
    return ctx.render("admin_user.html", status, title=user.email, user=user, keys=keys, ledger=ledger,
                      ledger_more=more, usage=usage, error=error, now=utcnow(),
                      idempotency_key=secrets.token_urlsafe(16), **view)


async def set_active(ctx: Ctx) -> Response:
    user = await accounts.get_user(ctx.db, ctx.request.path_params["user_id"])
    active = ctx.form.get("active") == "true"
    await accounts.update_user(ctx.db, ctx.gw.auth.bus, user, UserChanges(is_active=active))
    return redirect(f"{PREFIX}/admin/users/{user.id}", msg="enabled" if active else "disabled")


async def credit(ctx: Ctx) -> Response:
    """A credit (or, negative, an adjustment). The form carries an
    idempotency key made when it was drawn: sending it twice (a double
    click, a resent form) credits once."""
    user = await accounts.get_user(ctx.db, ctx.request.path_params["user_id"])
    spec: dict[str, Any] = {"amount_usd": ctx.form.get("amount_usd", "")}
    if ctx.form.get("note"):
        spec["note"] = ctx.form["note"]
    try:
        body = NewCredit.model_validate(spec)
    except ValidationError as exc:
        return await user_detail(ctx, error=validation_message(exc), status=400)
    key = ctx.form.get("idempotency_key", "")[:255] or None
    try:
        entry, created = await ctx.gw.ledger.credit(user.id, body.amount_usd, note=body.note, idempotency_key=key)
    except GatewayError as exc:
        return await user_detail(ctx, error=exc.message, status=exc.status_code)
    msg = ("credited" if entry.kind == "credit" else "adjusted") if created else "replayed"
    return redirect(f"{PREFIX}/admin/users/{user.id}", msg=msg)


async def spend(ctx: Ctx) -> Response:
    start, end = reports.date_range(ctx.arg("from", 32), ctx.arg("to", 32))
    await flush_usage(ctx.gw)
    by_user = await reports.usage_report(ctx.db, UsageQuery(start, end, "user"))
    by_model = await reports.usage_report(ctx.db, UsageQuery(start, end, "model"))
    names = await queries.emails(ctx.db, [r.group for r in by_user.rows if r.group])
    user_rows = sorted(by_user.rows, key=lambda r: -r.cost_nanos)
    model_rows = sorted(by_model.rows, key=lambda r: -r.cost_nanos)
    chart = {
        "models": {"labels": [r.group or "—" for r in model_rows],
                   "cost": [r.cost_nanos / 1e9 for r in model_rows]},
        "users": {"labels": [names.get(r.group or "", "master key") for r in user_rows[:15]],
                  "cost": [r.cost_nanos / 1e9 for r in user_rows[:15]]},
    }
    return ctx.render("admin_spend.html", title="Spend", start=start, end=end, by_user=user_rows,
                      by_model=model_rows, names=names, totals=by_model.totals, chart=chart)


async def models(ctx: Ctx) -> Response:
    await flush_usage(ctx.gw)
    router = ctx.gw.router
    hour = await queries.deployments_last_hour(ctx.db, utcnow())
    now = time.monotonic()
    rows = []
    for name, model in router.models.items():
        deployments = []
        for route in router.routes(model):
            window = route.breaker.window
            seen = hour.get(route.label)
            deployments.append({
                "label": route.label, "provider": route.deployment.provider, "kind": route.kind,
                "weight": route.deployment.weight,
                "state": STATES.get(route.breaker.state(now), "open"),
                "in_flight": route.stats.in_flight,
                "latency_ms": route.stats.latency * 1000 if route.stats.latency else None,
                "window": (window.failures, window.calls) if window is not None else None,
                "hour": seen,
                "error_rate": seen.errors / seen.requests if seen and seen.requests else None,
            })
        rows.append({"name": name, "model": model, "deployments": deployments})
    return ctx.render("admin_models.html", title="Models and deployments", models=rows)
