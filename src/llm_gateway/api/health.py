"""Liveness, readiness and Prometheus metrics (SPEC §3, §7, §8)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from llm_gateway.api.responses import error_response, json_response
from llm_gateway.errors import AuthenticationFailed, ServiceUnavailable
from llm_gateway.state import GatewayState

router = APIRouter(tags=["Health"])
CHECK_TIMEOUT_S = 2.0


@router.get("/health", summary="Liveness: the process is up")
async def health() -> Response:
    return json_response({"status": "ok"})


async def _check(probe: Awaitable[object]) -> str:
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except Exception:
        return "down"
    return "ok"


@router.get("/ready", summary="Readiness: the database and Redis answer (503 naming what is down)")
async def ready(request: Request) -> Response:
    gw: GatewayState = request.app.state.gateway
    names = ["database"]
    probes: list[Awaitable[object]] = [gw.db.ping()]
    if gw.redis is not None:
        names.append("redis")
        probes.append(gw.redis.ping())
    results = await asyncio.gather(*(_check(p) for p in probes))
    checks = dict(zip(names, results, strict=True))
    if gw.redis_watch is not None:
        # What /ready says about Redis is what the limiter and the cache do.
        if checks["redis"] == "ok":
            gw.redis_watch.answered()
        else:
            gw.redis_watch.lost("readiness check", "PING failed")
    down = [name for name, result in checks.items() if result != "ok"]
    if not down:
        return json_response({"status": "ready", "checks": checks})
    err = ServiceUnavailable(f"Not ready: {' and '.join(down)} unreachable.", code="not_ready")
    body = {"status": "unavailable", "down": down, "checks": checks, **err.to_openai()}
    return json_response(body, status=503)


@router.get("/metrics", summary="Prometheus metrics (bearer token when observability.metrics_token is set)")
async def metrics(request: Request) -> Response:
    gw: GatewayState = request.app.state.gateway
    token = gw.settings.observability.metrics_token
    if token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return error_response(AuthenticationFailed("GET /metrics needs the metrics bearer token."),
                                  {"www-authenticate": "Bearer"})
    assert gw.observer is not None
    body = await asyncio.to_thread(gw.observer.metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
