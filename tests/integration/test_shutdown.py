"""A graceful shutdown loses no usage record, though they are written in
batches."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from sqlalchemy import text

from llm_gateway.db.engine import Database
from tests.conftest import AUTH, MASTER_KEY
from tests.integration.processes import gateway_process


def test_sigterm_flushes_usage_records(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/shutdown.db"
    # Batches every 60 s: only the shutdown flush can write these records.
    config = {"master_key": MASTER_KEY, "database_url": url, "usage_flush_interval_s": 60}
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
    with gateway_process(config, tmp_path, "gw") as base, httpx.Client(headers=AUTH) as client:
        for _ in range(40):
            assert client.post(f"{base}/v1/chat/completions", json=body).status_code == 200
        started = time.monotonic()
    # gateway_process sent SIGTERM at once and waited for the exit.
    assert time.monotonic() - started < 10

    async def count() -> int:
        db = Database(url)
        try:
            async with db.engine.connect() as conn:
                return int((await conn.execute(text("SELECT COUNT(*) FROM usage_records"))).scalar() or 0)
        finally:
            await db.aclose()

    assert asyncio.run(count()) == 40
