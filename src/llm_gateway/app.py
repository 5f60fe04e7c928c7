"""The ASGI application: routes, error handlers and the lifespan that opens
and closes everything the gateway holds."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from llm_gateway import __version__
from llm_gateway.api import admin, billing, health, login, me
from llm_gateway.api.anthropic import routes as anthropic_routes
from llm_gateway.api.docs import install_docs
from llm_gateway.api.guard import RequestGuard
from llm_gateway.api.openai import responses_api
from llm_gateway.api.openai import routes as openai_routes
from llm_gateway.api.openapi_doc import build_document
from llm_gateway.api.responses import install_error_handlers
from llm_gateway.observability.observer import ObservedRequests
from llm_gateway.settings import Settings, load_settings
from llm_gateway.state import GatewayState
from llm_gateway.ui import install_ui

log = logging.getLogger("llm_gateway")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Settings are loaded here (not at import) when not given."""
    settings = settings if settings is not None else load_settings()
    state = GatewayState.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()  # raises SchemaOutOfDate: refuse to serve an old schema
        # Everything built so far lives as long as the process: keep it out of
        # the collector's scans, which otherwise show up as tail latency.
        gc.collect()
        gc.freeze()
        log.info(
            "gateway started: %d providers, %d models", len(settings.providers), len(settings.models)
        )
        try:
            yield
        finally:
            await state.aclose()
            log.info("gateway stopped")

    app = FastAPI(
        title="LLM Gateway",
        version=__version__,
        description="One OpenAI-compatible API over OpenAI, Anthropic, Gemini and OpenAI-compatible servers.",
        lifespan=lifespan,
        docs_url=None,  # api/docs.py serves /docs and /redoc without a CDN
        redoc_url=None,
        # Starlette's "/path/" → "/path" redirect writes the request's Host into
        # Location (an open redirect); a trailing slash is a 404 in SPEC §4's shape.
        redirect_slashes=False,
    )
    app.state.gateway = state
    install_error_handlers(app)
    if state.observer is not None:
        # Requests in flight, and unhandled errors reported before the 500 is rendered.
        app.add_middleware(ObservedRequests, observer=state.observer)
    # Outermost: the body limit before anything reads or authenticates, and x-request-id on every answer.
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_request_bytes, holder=state)
    app.router.routes.extend(openai_routes.routes)
    app.router.routes.extend(anthropic_routes.routes)
    app.router.routes.extend(responses_api.routes)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(me.router)
    app.include_router(billing.router)
    app.include_router(login.router)

    install_docs(app)
    if settings.ui.enabled:
        install_ui(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory`` and gunicorn workers."""
    return create_app()
