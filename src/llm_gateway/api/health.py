"""Liveness."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from llm_gateway.api.responses import json_response

router = APIRouter(tags=["Health"])


@router.get("/health", summary="Liveness: the process is up")
async def health() -> Response:
    return json_response({"status": "ok"})
