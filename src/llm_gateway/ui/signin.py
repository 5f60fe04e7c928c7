"""Signing in and out of the dashboard: email and password (as
``/auth/login``), or an API key or the master key pasted in; throttled by
the same ``LoginThrottle`` as the API."""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import Response

from llm_gateway.auth.authenticator import user_principal
from llm_gateway.auth.credentials import hash_secret
from llm_gateway.auth.passwords import verify_password
from llm_gateway.db import users as user_repo
from llm_gateway.errors import AuthenticationFailed, RateLimited
from llm_gateway.ui import session as sessions
from llm_gateway.ui.web import PREFIX, Ctx, form, gateway, html, redirect, session_keys, templates

PRE_TTL_S = 3600
MAX_FIELD = 4096


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _login_page(request: Request, error: str | None = None, status: int = 200, email: str = "") -> Response:
    token = request.cookies.get(sessions.PRE_COOKIE)
    if not token or len(token) > 64:
        token = secrets.token_urlsafe(24)
    body = templates().get_template("login.html").render(viewer=None, csrf=token, error=error, email=email, path="")
    response = html(body, status)
    sessions.set_cookie(response, request, sessions.PRE_COOKIE, token, PRE_TTL_S)
    return response


async def login_page(request: Request) -> Response:
    gw = gateway(request)
    async with gw.db.session() as db:
        if await sessions.viewer(gw, session_keys(request), db, request.cookies.get(sessions.COOKIE)):
            return redirect(PREFIX + "/")
    return _login_page(request)


async def _checked_form(request: Request) -> dict[str, str] | None:
    """The sign-in form, if it came from our own sign-in page (double-submit token)."""
    data = await form(request)
    if not sessions.same_origin(request):
        return None
    expected = request.cookies.get(sessions.PRE_COOKIE, "")
    return data if sessions.csrf_ok(expected, data.get("csrf_token")) else None


def _signed_in(request: Request, cookie: str) -> Response:
    response = redirect(PREFIX + "/")
    sessions.set_cookie(response, request, sessions.COOKIE, cookie, sessions.SESSION_TTL_S)
    response.delete_cookie(sessions.PRE_COOKIE, path=sessions.COOKIE_PATH)
    return response


async def login_password(request: Request) -> Response:
    data = await _checked_form(request)
    if data is None:
        return _login_page(request, "The sign-in form expired. Please try again.", 403)
    email = user_repo.normalise_email(data.get("email", ""))[:320]
    password = data.get("password", "")[:MAX_FIELD]
    gw = gateway(request)
    ip = _client_ip(request)
    try:
        await gw.throttle.check(email, ip)
    except RateLimited as exc:
        return _login_page(request, exc.message, 429, email)
    async with gw.db.session() as db:
        user = await user_repo.get_by_email(db, email) if email else None
        ok = await verify_password(user.password_hash if user else None, password)
        if not ok or user is None or not user.is_active:
            await gw.throttle.failed(email, ip)
            return _login_page(request, "Incorrect email or password.", 401, email)
        await gw.throttle.succeeded(email)
        principal = user_principal(user)
        cookie = await sessions.new_session(gw, session_keys(request), db, principal)
    return _signed_in(request, cookie)


async def login_key(request: Request) -> Response:
    data = await _checked_form(request)
    if data is None:
        return _login_page(request, "The sign-in form expired. Please try again.", 403)
    credential = data.get("api_key", "")[:MAX_FIELD]
    gw = gateway(request)
    ip = _client_ip(request)
    who = f"api-key@{ip}"  # counted per address: a pasted key names no account
    try:
        await gw.throttle.check(who, ip)
    except RateLimited as exc:
        return _login_page(request, exc.message, 429)
    try:
        principal = await gw.auth.authenticate(credential or None)
    except AuthenticationFailed:
        await gw.throttle.failed(who, ip)
        return _login_page(request, "That key is not valid (or was revoked, or has expired).", 401)
    await gw.throttle.succeeded(who)
    async with gw.db.session() as db:
        cookie = await sessions.new_session(gw, session_keys(request), db, principal,
                                            master_digest=hash_secret(credential))
    return _signed_in(request, cookie)


async def logout(ctx: Ctx) -> Response:
    response = redirect(PREFIX + "/login")
    sessions.clear_cookie(response, ctx.request)
    return response
