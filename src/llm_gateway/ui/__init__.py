"""The dashboard at ``/ui/``: server-rendered pages (Jinja2, autoescaped),
one small script of our own and a vendored Chart.js, all served from this
package: no CDN, no Node toolchain. docs/dashboard.md describes the pages
and how they are secured. None of these routes is in the OpenAPI document."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llm_gateway.api.calls import chat_endpoint
from llm_gateway.api.openai.routes import CHAT
from llm_gateway.ui import admin, pages, signin
from llm_gateway.ui.session import SessionKeys
from llm_gateway.ui.web import PREFIX, page, redirect, static


async def _to_dashboard(request: Request) -> Response:
    return redirect(PREFIX + "/")


def _routes() -> list[Route]:
    get, post = ["GET"], ["POST"]
    table: list[tuple[str, object, list[str]]] = [
        ("", _to_dashboard, get),
        ("/", page(pages.overview), get),
        ("/login", signin.login_page, get),
        ("/login", signin.login_password, post),
        ("/login/key", signin.login_key, post),
        ("/logout", page(signin.logout), post),
        ("/keys", page(pages.keys), get),
        ("/keys", page(pages.create_key), post),
        ("/keys/{key_id}/revoke", page(pages.revoke_key), post),
        ("/usage", page(pages.usage), get),
        ("/usage.csv", page(pages.usage_csv), get),
        ("/requests", page(pages.requests_page), get),
        ("/requests/{record_id}", page(pages.request_detail), get),
        ("/balance", page(pages.balance), get),
        ("/playground", page(pages.playground), get),
        ("/account.json", page(pages.account_json), get),
        ("/playground/chat", chat_endpoint(CHAT, principal_of=pages.playground_principal), post),
        ("/admin/users", page(admin.users, admin=True), get),
        ("/admin/users", page(admin.create_user, admin=True), post),
        ("/admin/users/{user_id}", page(admin.user_detail, admin=True), get),
        ("/admin/users/{user_id}/active", page(admin.set_active, admin=True), post),
        ("/admin/users/{user_id}/credit", page(admin.credit, admin=True), post),
        ("/admin/spend", page(admin.spend, admin=True), get),
        ("/admin/models", page(admin.models, admin=True), get),
        ("/static/{name}", static, get),
    ]
    return [Route(PREFIX + path, endpoint, methods=methods, include_in_schema=False)  # type: ignore[arg-type]
            for path, endpoint, methods in table]


def install_ui(app: FastAPI) -> None:
    """Add the dashboard's routes to ``app``."""
    app.state.ui_keys = SessionKeys()
    app.router.routes.extend(_routes())
