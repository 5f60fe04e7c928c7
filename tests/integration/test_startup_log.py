"""What an operator reads when the gateway starts: the models that would be
free by mistake (in the log and in ``check-config``), one line about the
schema instead of Alembic's chatter, and the address gunicorn listens at."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from llm_gateway.db import migrate

CONFIG = {
    "providers": [{"name": "openai", "kind": "openai", "api_base": "http://127.0.0.1:9/v1", "api_key": "sk-test"}],
    "models": [
        {"name": "free-oops", "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]},
        {"name": "free-on-purpose", "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}],
         "pricing": {"input_per_mtok": "0", "output_per_mtok": "0"}},
        {"name": "priced", "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}],
         "pricing": {"input_per_mtok": "0.15", "output_per_mtok": "0.60"}},
    ],
}


def _cli(folder: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.Popen([sys.executable, "-m", "llm_gateway.cli", *args], cwd=folder, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(CONFIG | {"database_url": f"sqlite+aiosqlite:///{tmp_path}/gw.db"}))
    return path


def test_check_config_lists_the_models_without_pricing(tmp_path: Path, config: Path) -> None:
    out, _ = _cli(tmp_path, "check-config", "--config", str(config)).communicate(timeout=60)
    warnings = [line for line in out.splitlines() if "no pricing" in line]
    assert warnings == ["  warning: model free-oops has no pricing: it is free for every caller, "
                        "even with a zero balance"], out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_start_up_log(tmp_path: Path, config: Path) -> None:
    port = _free_port()
    server = _cli(tmp_path, "serve", "--config", str(config), "--port", str(port), "--workers", "2")
    try:
        deadline = time.monotonic() + 60
        while server.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        started = server.poll() is None
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
    assert started, out
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    messages = [r["msg"] for r in records]

    unpriced = [r for r in records if r["level"] == "warning" and "no pricing" in r["msg"]]
    assert len(unpriced) == 1, out  # once, not once per worker
    assert "free-oops" in unpriced[0]["msg"]
    assert not any(name in unpriced[0]["msg"] for name in ("free-on-purpose", "priced", "mock"))

    assert not any(r["logger"].startswith("alembic") for r in records), out
    assert not any("setup plugin" in m or "Context impl" in m for m in messages), out
    assert [m for m in messages if "schema" in m] == [f"database schema upgraded from (empty) to {migrate.HEAD}"]

    assert any(m.startswith(f"Listening at: http://127.0.0.1:{port} (") for m in messages), out
