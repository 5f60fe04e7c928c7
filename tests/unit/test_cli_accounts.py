"""``llm-gateway migrate|users|keys`` in a subprocess, against a temporary
SQLite file and a fresh PostgreSQL database: clear errors without
tracebacks, keys that a running gateway accepts, revocations that reach it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import running_stack
from tests.databases import postgres_database, redis_url


@dataclass
class Cli:
    folder: Path
    config: Path
    database_url: str
    kind: str

    def __call__(self, *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        done = subprocess.run(
            [sys.executable, "-m", "llm_gateway.cli", *args, "--config", str(self.config)],
            input=stdin, capture_output=True, text=True, cwd=self.folder, env=env, timeout=60,
        )
        assert "Traceback" not in done.stderr + done.stdout, done.stderr
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    def configure(self, **extra: Any) -> None:
        self.config.write_text(yaml.safe_dump({"database_url": self.database_url, **extra}))


@pytest.fixture(params=["sqlite", "postgresql"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    if request.param == "sqlite":
        yield sqlite_cli(tmp_path)
        return
    with postgres_database() as url:  # empty: not migrated yet
        runner = Cli(tmp_path, tmp_path / "gw.yaml", url, "postgresql")
        runner.configure()
        yield runner


def sqlite_cli(folder: Path) -> Cli:
    runner = Cli(folder, folder / "gw.yaml", f"sqlite+aiosqlite:///{folder}/gw.db", "sqlite")
    runner.configure()
    return runner


def migrated(cli: Cli) -> Cli:
    if cli.kind == "postgresql":
        cli("migrate")
    return cli


def test_help_lists_the_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "llm_gateway.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for command in ("serve", "migrate", "check-config", "users", "keys", "master-key"):
        assert command in out
    keys = subprocess.run([sys.executable, "-m", "llm_gateway.cli", "keys", "--help"], capture_output=True,
                          text=True, check=True).stdout
    assert all(action in keys for action in ("create", "revoke", "list"))
    master = subprocess.run([sys.executable, "-m", "llm_gateway.cli", "master-key", "--help"],
                            capture_output=True, text=True, check=True).stdout
    assert all(action in master for action in ("status", "rotate"))


def test_migrate_is_repeatable_and_required_on_postgresql(cli: Cli) -> None:
    if cli.kind == "postgresql":
        refused = cli("users", "list", ok=False)
        assert refused.returncode == 1 and "llm-gateway migrate" in refused.stderr
    first = cli("migrate")
    assert "revision" in first.stdout
    assert cli("migrate").stdout == first.stdout
    assert cli("users", "list").stdout == ""


def test_sqlite_schema_is_created_by_any_command(tmp_path: Path) -> None:
    assert sqlite_cli(tmp_path)("users", "create", "--email", "first@example.com").stdout.startswith("user_")


def test_users_and_keys(cli: Cli) -> None:
    migrated(cli)
    user_id = cli("users", "create", "--email", "Ops@Example.com", "--password-stdin", "--role", "admin",
                  "--rpm", "60", "--allowed-models", "mock, gpt-test", stdin="a long password\n").stdout.strip()
    assert user_id.startswith("user_")
    duplicate = cli("users", "create", "--email", "ops@example.COM", ok=False)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr

    listed = cli("users", "list").stdout
    assert user_id in listed and "Ops@Example.com" in listed and "admin" in listed
    user = json.loads(cli("users", "list", "--json").stdout.splitlines()[0])
    assert user["id"] == user_id and user["allowed_models"] == ["mock", "gpt-test"] and user["rpm"] == 60
    assert "password" not in json.dumps(user)

    made = cli("keys", "create", "--user", "ops@example.com", "--name", "deploy", "--allowed-models", "mock",
               "--budget-usd", "2.50", "--budget-period", "month", "--expires-at", "2099-01-01T00:00:00")
    key, id_line, prefix_line = made.stdout.splitlines()
    assert key.startswith("gw-") and id_line.startswith("id: key_") and key.startswith(prefix_line[len("prefix: "):])
    key_id = id_line[len("id: "):]
    assert "only this once" in made.stderr

    shown = [json.loads(line) for line in cli("keys", "list", "--user", user_id, "--json").stdout.splitlines()]
    assert [k["id"] for k in shown] == [key_id]
    assert shown[0]["budget_usd"] == "2.500000" and shown[0]["expires_at"].startswith("2099-01-01T00:00:00")
    everything = cli("keys", "list", "--json").stdout
    assert key not in everything and hashlib.sha256(key.encode()).hexdigest() not in everything

    revoked = cli("keys", "revoke", key_id)
    assert f"revoked {key_id}" in revoked.stdout
    assert "revoked" in cli("keys", "list").stdout
    cli("keys", "revoke", key_id)  # again: fine


@pytest.mark.parametrize(("args", "message"), [
    (["users", "create", "--email", "not-an-email"], "--email"),
    (["users", "create", "--email", "a@example.com", "--password", "short"], "--password"),
    (["users", "create", "--email", "a@example.com", "--rpm", "0"], "--rpm"),
    (["keys", "create", "--user", "nobody@example.com", "--name", "k"], "nobody@example.com"),
    (["keys", "create", "--user", "x@example.com", "--name", "k", "--budget-usd", "5"], "budget_period"),
    (["keys", "create", "--user", "x@example.com", "--name", "k", "--expires-at", "2001-01-01"], "--expires-at"),
    (["keys", "create", "--user", "x@example.com", "--name", "k", "--budget-usd", "cheap", "--budget-period",
      "day"], "--budget-usd"),
    (["keys", "revoke", "key_unknown"], "key_unknown"),
    (["keys", "list", "--user", "user_unknown"], "user_unknown"),
    (["users", "disable", "ghost@example.com"], "ghost@example.com"),
])
def test_errors_are_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = sqlite_cli(tmp_path)(*args, ok=False)
    assert done.returncode == 1 and message in done.stderr and done.stderr.startswith("llm-gateway: ")


def test_unreachable_database_and_bad_config(tmp_path: Path) -> None:
    runner = Cli(tmp_path, tmp_path / "gw.yaml", "postgresql+asyncpg://nobody:secret@127.0.0.1:9/none", "pg")
    runner.configure()
    done = runner("users", "list", ok=False)
    assert done.returncode == 1 and "cannot use the database" in done.stderr and "secret" not in done.stderr
    runner.config.write_text("database_url: sqlite+aiosqlite:///x.db\nno_such_key: 1\n")
    bad = runner("users", "list", ok=False)
    assert bad.returncode == 2 and "no_such_key" in bad.stderr


def test_cli_keys_work_on_a_running_gateway_and_revocation_reaches_it(cli: Cli) -> None:
    migrated(cli)
    cli("users", "create", "--email", "live@example.com")
    made = cli("keys", "create", "--user", "live@example.com", "--name", "live").stdout.splitlines()
    key, key_id = made[0], made[1][len("id: "):]
    with running_stack(cli.folder, cli.database_url) as stack:
        headers = {"authorization": f"Bearer {key}"}
        chat = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{stack.url}/v1/chat/completions", json=chat, headers=headers, timeout=20).status_code == 200
        cli("keys", "revoke", key_id)
        # No Redis: the gateway caches a credential for one second at most.
        started = time.monotonic()
        while httpx.get(f"{stack.url}/v1/models", headers=headers, timeout=20).status_code == 200:
            assert time.monotonic() - started < 1.5, "the gateway still accepts a key the CLI revoked"
            time.sleep(0.05)

        made = cli("keys", "create", "--user", "live@example.com", "--name", "second").stdout.splitlines()
        headers = {"authorization": f"Bearer {made[0]}"}
        assert httpx.get(f"{stack.url}/v1/models", headers=headers, timeout=20).status_code == 200
        assert "disabled" in cli("users", "disable", "live@example.com").stdout
        started = time.monotonic()
        while httpx.get(f"{stack.url}/v1/models", headers=headers, timeout=20).status_code == 200:
            assert time.monotonic() - started < 1.5, "the gateway still accepts a disabled user's key"
            time.sleep(0.05)
        cli("users", "enable", "live@example.com")


def test_revocation_is_published_on_redis(tmp_path: Path) -> None:
    import redis

    from llm_gateway.auth.invalidation import CHANNEL

    url = redis_url()
    runner = sqlite_cli(tmp_path)
    runner.configure(redis_url=url)
    user_id = runner("users", "create", "--email", "redis@example.com").stdout.strip()
    made = runner("keys", "create", "--user", user_id, "--name", "r").stdout.splitlines()
    key, key_id = made[0], made[1][len("id: "):]
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(CHANNEL)
    try:
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
        runner("keys", "revoke", key_id)
        runner("users", "disable", user_id)
        got: list[str] = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1)
            if message and message["type"] == "message":
                got.append(message["data"].decode())
        assert got == [f"key:{hashlib.sha256(key.encode()).hexdigest()}", f"user:{user_id}"]
    finally:
        pubsub.close()
        client.close()
