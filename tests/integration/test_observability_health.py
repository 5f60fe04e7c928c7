"""``/health`` and ``/ready``: ready when the database and Redis answer; a
gateway whose database and Redis are unreachable still starts, alive but
not ready, and says what is down (SPEC §8, degraded start)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import MASTER_KEY, running_stack
from tests.databases import database, redis_url
from tests.fakes.server import free_port
from tests.integration.processes import gateway_process


def test_ready_when_database_and_redis_answer(tmp_path: Path) -> None:
    with database("postgresql", tmp_path) as database_url, \
            running_stack(tmp_path, database_url, {"redis_url": redis_url()}) as stack:
        assert httpx.get(f"{stack.url}/health", timeout=10).json() == {"status": "ok"}
        resp = httpx.get(f"{stack.url}/ready", timeout=10)
        assert resp.status_code == 200
        assert resp.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


def test_degraded_start_names_what_is_down(tmp_path: Path) -> None:
    closed_pg, closed_redis = free_port(), free_port()
    config = {"master_key": MASTER_KEY,
              "database_url": f"postgresql+asyncpg://postgres@127.0.0.1:{closed_pg}/gateway",
              "redis_url": f"redis://127.0.0.1:{closed_redis}/0"}
    with gateway_process(config, tmp_path, "degraded") as base:  # it waits for /health to answer 200
        resp = httpx.get(f"{base}/ready", timeout=10)
        assert resp.status_code == 503
        body = resp.json()
        assert body["down"] == ["database", "redis"]
        assert body["checks"] == {"database": "down", "redis": "down"}
        assert body["error"]["type"] == "service_unavailable" and body["error"]["code"] == "not_ready"
        assert "database" in body["error"]["message"] and "redis" in body["error"]["message"]
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
