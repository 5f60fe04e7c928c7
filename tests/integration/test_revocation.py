"""Two gateway processes sharing one database (and Redis): a key revoked
through one is refused by the other within a second."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import AUTH, MASTER_KEY
from tests.databases import database, redis_url
from tests.integration.processes import gateway_processes


@pytest.fixture(params=["postgresql+redis", "postgresql", "sqlite"])
def two_gateways(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    config: dict[str, Any] = {"master_key": MASTER_KEY}
    if request.param.endswith("+redis"):
        config["redis_url"] = redis_url()
    kind = "postgresql" if request.param.startswith("postgresql") else "sqlite"
    with database(kind, tmp_path) as url:  # PostgreSQL is migrated first, as an operator would
        config["database_url"] = url
        with gateway_processes(config, tmp_path, 2) as urls:
            yield urls


def _create_key(base: str) -> tuple[str, str]:
    user = httpx.post(f"{base}/admin/users", json={"email": f"u{time.time_ns()}@example.com"}, headers=AUTH,
                      timeout=10)
    assert user.status_code == 201, user.text
    key = httpx.post(f"{base}/admin/users/{user.json()['id']}/keys", json={"name": "k"}, headers=AUTH, timeout=10)
    assert key.status_code == 201, key.text
    return key.json()["id"], key.json()["key"]


def test_revoked_key_refused_by_other_process_within_a_second(two_gateways: list[str]) -> None:
    a, b = two_gateways
    key_id, key = _create_key(a)
    headers = {"authorization": f"Bearer {key}"}
    for _ in range(5):  # warm b's cache
        assert httpx.get(f"{b}/v1/models", headers=headers, timeout=10).status_code == 200
    revoked = httpx.delete(f"{a}/admin/keys/{key_id}", headers=AUTH, timeout=10)
    assert revoked.status_code == 200
    started = time.monotonic()
    while httpx.get(f"{b}/v1/models", headers=headers, timeout=10).status_code == 200:
        assert time.monotonic() - started < 1.0, "the other process still accepts the revoked key after 1 s"
        time.sleep(0.02)
    assert httpx.get(f"{a}/v1/models", headers=headers, timeout=10).status_code == 401


def test_disabled_user_refused_by_other_process_within_a_second(two_gateways: list[str]) -> None:
    a, b = two_gateways
    _, key = _create_key(a)
    headers = {"authorization": f"Bearer {key}"}
    assert httpx.get(f"{b}/v1/models", headers=headers, timeout=10).status_code == 200
    user_id = httpx.get(f"{a}/me", headers=headers, timeout=10).json()["id"]
    patched = httpx.patch(f"{a}/admin/users/{user_id}", json={"is_active": False}, headers=AUTH, timeout=10)
    assert patched.status_code == 200, patched.text
    started = time.monotonic()
    while httpx.get(f"{b}/v1/models", headers=headers, timeout=10).status_code == 200:
        assert time.monotonic() - started < 1.0
        time.sleep(0.02)
