"""``llm-gateway master-key status|rotate`` in a subprocess, against SQLite
and PostgreSQL: the key is printed once and never shown again, a configured
key is not rotated, and a running gateway refuses the old key and accepts
the new one without a restart."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import running_stack
from tests.databases import postgres_database, redis_url
from tests.unit.test_cli_accounts import Cli, migrated, sqlite_cli

CONFIGURED = "gw-configured-master-key-0123456789abcdefghij"


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    if request.param == "sqlite":
        yield sqlite_cli(tmp_path)
        return
    with postgres_database() as url:
        runner = Cli(tmp_path, tmp_path / "gw.yaml", url, "postgresql")
        runner.configure()
        yield runner


def rotate(cli: Cli) -> str:
    done = cli("master-key", "rotate")
    key, prefix_line = done.stdout.splitlines()
    assert key.startswith("gw-") and len(key) >= 35 and key.startswith(prefix_line.removeprefix("prefix: "))
    assert "only this once" in done.stderr
    return key


def test_status_and_rotate(cli: Cli) -> None:
    migrated(cli)
    assert "none yet" in cli("master-key", "status").stdout
    first = rotate(cli)
    status = cli("master-key", "status").stdout
    assert "generated" in status and f"prefix: {first[:11]}" in status and "created: " in status
    assert first not in status and hashlib.sha256(first.encode()).hexdigest() not in status

    second = rotate(cli)
    assert second != first
    status = cli("master-key", "status").stdout
    assert f"prefix: {second[:11]}" in status and second not in status


def test_a_configured_key_is_not_rotated(tmp_path: Path) -> None:
    runner = sqlite_cli(tmp_path)
    stored = rotate(runner)
    runner.configure(master_key=CONFIGURED)
    refused = runner("master-key", "rotate", ok=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("llm-gateway: ") and "configured" in refused.stderr
    status = runner("master-key", "status").stdout
    assert "configured (master_key in the config)" in status and CONFIGURED not in status
    assert f"prefix {stored[:11]}" in status and "ignored" in status


def _status(url: str, key: str) -> int:
    return httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=20).status_code


def _without_master_key(config: dict[str, Any]) -> None:
    config.pop("master_key")


def test_rotation_reaches_a_running_gateway(cli: Cli) -> None:
    migrated(cli)
    old = rotate(cli)  # stored before the gateway starts: it keeps it
    with running_stack(cli.folder, cli.database_url, edit=_without_master_key) as stack:
        assert _status(stack.url, old) == 200
        new = rotate(cli)
        # No Redis: the gateway caches a credential for a second; wait it out.
        deadline = time.monotonic() + 30
        while _status(stack.url, old) == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = httpx.get(f"{stack.url}/v1/models", headers={"authorization": f"Bearer {old}"}, timeout=20)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert _status(stack.url, new) == 200
        assert httpx.get(f"{stack.url}/admin/users", headers={"authorization": f"Bearer {new}"},
                         timeout=20).status_code == 200

    # A restart keeps the stored key; a configured one takes precedence over it.
    with running_stack(cli.folder, cli.database_url, edit=_without_master_key) as stack:
        assert _status(stack.url, new) == 200 and _status(stack.url, old) == 401
    with running_stack(cli.folder, cli.database_url, extra={"master_key": CONFIGURED}) as stack:
        assert _status(stack.url, CONFIGURED) == 200 and _status(stack.url, new) == 401


def test_rotation_is_published_on_redis(tmp_path: Path) -> None:
    import redis

    from llm_gateway.auth.invalidation import CHANNEL

    url = redis_url()
    runner = sqlite_cli(tmp_path)
    runner.configure(redis_url=url)
    old = rotate(runner)
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(CHANNEL)
    try:
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
        rotate(runner)
        expected = f"key:{hashlib.sha256(old.encode()).hexdigest()}"
        seen: list[str] = []  # other tests may share this Redis and channel
        deadline = time.monotonic() + 5
        while expected not in seen and time.monotonic() < deadline:
            got = pubsub.get_message(timeout=1)
            if got and got["type"] == "message":
                seen.append(got["data"].decode())
        assert expected in seen
    finally:
        pubsub.close()
        client.close()
