"""What every dashboard page shares: templates (autoescaped), the security
headers, packaged static files, form bodies, and the ``page`` wrapper that
signs the viewer in, checks CSRF on writes and admin rights on admin pages."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from llm_gateway.errors import GatewayError
from llm_gateway.state import GatewayState
from llm_gateway.ui import session as sessions
from llm_gateway.ui.session import SessionKeys, Viewer

log = logging.getLogger("llm_gateway.ui")

PREFIX = "/ui"
# Scripts and styles from this origin only: no inline script, no inline
# style, no event-handler attributes; forms post here only; no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
STATIC = {  # file in ui/static → media type
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "chart.umd.min.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


MESSAGES = {  # ?msg= after a redirect → what the page says (fixed texts: a link cannot make it say anything else)
    "revoked": "Key revoked.",
    "user_created": "User created.",
    "enabled": "User enabled.",
    "disabled": "User disabled.",
    "credited": "Credit recorded.",
    "adjusted": "Adjustment recorded.",
    "replayed": "Already recorded: this form had been sent before, so nothing changed.",
}


def money(value: Decimal | float | None, places: int = 2) -> str:
    """``$1,234.57``; an amount under a cent keeps at least six decimals (``$0.000123``)."""
    amount = Decimal(str(value)) if isinstance(value, float) else Decimal(value or 0)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if 0 < amount < Decimal("0.01"):
        small = amount.quantize(Decimal(10) ** -max(places, 6)).normalize()
        return f"{sign}${format(small, 'f')}"
    text = f"{amount:,.{places}f}"
    whole, _, frac = text.partition(".")
    frac = frac[:2] + frac[2:].rstrip("0")  # exact to ``places``, without trailing zeros past the cents
    return f"{sign}${whole}.{frac}" if frac else f"{sign}${whole}"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "—"


def number(value: int | float | None) -> str:
    return f"{value or 0:,}"


@cache
def templates() -> Environment:
    env = Environment(loader=PackageLoader("llm_gateway.ui", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True), auto_reload=False)
    env.filters.update(money=money, when=when, number=number)
    env.globals["asset"] = asset_url
    return env


@cache
def static_file(name: str) -> tuple[bytes, str] | None:
    media_type = STATIC.get(name)
    if media_type is None:
        return None
    return resources.files("llm_gateway.ui").joinpath("static", name).read_bytes(), media_type


@cache
def asset_url(name: str) -> str:
    """A static file's address, versioned by its content (cached for a day)."""
    found = static_file(name)
    assert found is not None, name
    return f"{PREFIX}/static/{name}?v={hashlib.sha256(found[0]).hexdigest()[:12]}"


def html(body: str, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="text/html; charset=utf-8",
                    headers=SECURITY_HEADERS | {"cache-control": "no-store"})


def redirect(path: str, **query: str | None) -> Response:
    params = {k: v for k, v in query.items() if v}
    url = path + ("?" + urlencode(params) if params else "")
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS | {"cache-control": "no-store"})


async def static(request: Request) -> Response:
    found = static_file(request.path_params["name"])
    if found is None:
        return html(templates().get_template("error.html").render(title="Not found", viewer=None,
                                                                    message="No such file."), 404)
    headers = SECURITY_HEADERS | {"cache-control": "public, max-age=86400"}
    return Response(found[0], media_type=found[1], headers=headers)


async def form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the guard bounds its size)."""
    parsed = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0].strip() for k, v in parsed.items() if v}


def gateway(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def session_keys(request: Request) -> SessionKeys:
    keys: SessionKeys = request.app.state.ui_keys
    return keys


@dataclass(slots=True)
class Ctx:
    """One page request: the gateway, a database session, the viewer."""

    request: Request
    gw: GatewayState
    db: AsyncSession
    viewer: Viewer
    form: dict[str, str]

    def render(self, template: str, status: int = 200, **values: Any) -> Response:
        page = templates().get_template(template).render(
            viewer=self.viewer, csrf=self.viewer.csrf, path=self.request.url.path,
            flash=MESSAGES.get(self.request.query_params.get("msg", "")), **values)
        return html(page, status)

    def arg(self, name: str, limit: int = 200) -> str | None:
        value = self.request.query_params.get(name, "").strip()
        return value[:limit] or None


Handler = Callable[[Ctx], Awaitable[Response]]


def error_page(viewer: Viewer | None, status: int, title: str, message: str) -> Response:
    page = templates().get_template("error.html").render(viewer=viewer, csrf=viewer.csrf if viewer else "",
                                                         title=title, message=message, path="")
    return html(page, status)


def page(handler: Handler, *, admin: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """A page for signed-in viewers: anyone else goes to sign-in. A write
    (POST) must come from this site and carry the session's CSRF token; an
    admin page answers 403 to a user."""

    async def endpoint(request: Request) -> Response:
        gw = gateway(request)
        async with gw.db.session() as db:
            viewer = await sessions.viewer(gw, session_keys(request), db, request.cookies.get(sessions.COOKIE))
            if viewer is None:
                if request.method != "GET":
                    return error_page(None, 401, "Signed out", "Your session has ended. Sign in again.")
                response = redirect(PREFIX + "/login")
                if request.cookies.get(sessions.COOKIE):
                    sessions.clear_cookie(response, request)
                return response
            if admin and not viewer.is_admin:
                return error_page(viewer, 403, "Admins only",
                                  "This page needs the master key or an admin account.")
            data: dict[str, str] = {}
            if request.method == "POST":
                if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                    data = await form(request)
                sent = data.get("csrf_token") or request.headers.get("x-csrf-token")
                if not sessions.same_origin(request) or not sessions.csrf_ok(viewer.csrf, sent):
                    return error_page(viewer, 403, "Refused",
                                      "This form was not sent from this dashboard (CSRF check failed). "
                                      "Reload the page and try again.")
            try:
                return await handler(Ctx(request, gw, db, viewer, data))
            except GatewayError as exc:
                return error_page(viewer, exc.status_code if exc.status_code < 500 else 503,
                                  "Something went wrong", exc.message)

    return endpoint
