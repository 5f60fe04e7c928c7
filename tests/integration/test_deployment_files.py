"""The deployment files are valid and agree with the gateway: the Dockerfile
passes hadolint, the Compose file the Compose Specification's schema, nginx
accepts its config and answers its own errors in the gateway's shape; and
the start-up refusals an operator can meet (placeholder secrets, a bad
worker count) are one clear line, not a traceback."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from llm_gateway import workers
from llm_gateway.settings import Settings
from tests.databases import IN_CI
from tests.fakes.server import free_port
from tests.integration.topology import Nginx, require_nginx

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        message = f"{name} is not installed (a dev dependency: make .venv/.installed-dev)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_dockerfile_passes_hadolint_and_runs_unprivileged() -> None:
    dockerfile = DEPLOY / "Dockerfile"
    lint = subprocess.run([_tool("hadolint"), "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    text = dockerfile.read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) >= 2, "a multi-stage build"
    final = stages[-1]
    user = re.findall(r"^USER (\S+)", final, flags=re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert "HEALTHCHECK" in final and "/health" in final
    assert "[dev]" not in text, "runtime dependencies only"


def test_compose_file_matches_the_compose_spec_and_holds_no_secret() -> None:
    compose = DEPLOY / "docker-compose.yml"
    check = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(compose)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    services = yaml.safe_load(compose.read_text())["services"]
    assert {"postgres", "redis", "migrate", "gateway-1", "gateway-2", "nginx", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        for var, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|_KEY$", var):
                assert re.fullmatch(r"\$\{\w+(:[?-][^}]*)?\}", str(value)), f"{name}: {var} must come from the env"
    gateway = services["gateway-1"]
    assert gateway["environment"]["GATEWAY_ENVIRONMENT"] == "production"
    grace = int(str(gateway["stop_grace_period"]).rstrip("s"))
    assert grace > workers.DEFAULT_GRACEFUL_TIMEOUT_S, "docker would SIGKILL a replica still draining"


def test_nginx_accepts_the_config_and_answers_in_the_gateway_error_shape(tmp_path: Path) -> None:
    """No replica running: nginx's own 503; a body over the gateway's default
    max_request_bytes: nginx's own 413 — both in SPEC §4's shape."""
    conf = (DEPLOY / "nginx.conf").read_text()
    limit = int(re.search(r"client_max_body_size (\d+)m;", conf).group(1)) * 1024 * 1024  # type: ignore[union-attr]
    assert limit == Settings().max_request_bytes
    nginx = Nginx(require_nginx(), tmp_path / "nginx", free_port(), [f"127.0.0.1:{free_port()}" for _ in range(2)])
    nginx.folder.mkdir()
    checked = nginx.check()
    assert checked.returncode == 0, checked.stderr
    nginx.start()
    try:
        down = httpx.post(f"{nginx.url}/v1/chat/completions", json={"model": "mock"}, timeout=10)
        assert down.status_code == 503 and down.headers["retry-after"] == "1"
        assert down.json()["error"] == {"message": down.json()["error"]["message"], "type": "service_unavailable",
                                        "param": None, "code": "service_unavailable"}
        too_big = httpx.post(f"{nginx.url}/v1/chat/completions", content=b"x" * (limit + 1), timeout=30)
        assert too_big.status_code == 413
        assert too_big.json()["error"]["code"] == "request_too_large"
        assert str(limit) in too_big.json()["error"]["message"]
    finally:
        nginx.stop()


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "llm_gateway.cli", "serve", "--port", str(free_port()), *args],
        capture_output=True, text=True, cwd=tmp_path, env=base | (env or {}), timeout=60,
    )


@pytest.mark.parametrize("secret", ["change-me", "<your master key>", "gw-too-short-0123", "password"])
def test_production_refuses_placeholder_secrets(tmp_path: Path, secret: str) -> None:
    refused = _serve(tmp_path, env={"GATEWAY_ENVIRONMENT": "production", "GATEWAY_MASTER_KEY": secret})
    assert refused.returncode == 2
    assert "master_key" in refused.stderr and "Traceback" not in refused.stderr
    assert secret not in refused.stderr  # never echo a secret, even a bad one


def test_placeholder_secrets_are_fine_in_development_and_real_ones_in_production(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"auth": {"jwt_secret": "changeme"}}))
    check = [sys.executable, "-m", "llm_gateway.cli", "check-config", "--config", str(config)]
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    assert subprocess.run(check, capture_output=True, env=base, timeout=60).returncode == 0
    prod = subprocess.run(check, capture_output=True, text=True, timeout=60,
                          env=base | {"GATEWAY_ENVIRONMENT": "production"})
    assert prod.returncode == 2 and "auth.jwt_secret is a placeholder" in prod.stderr
    config.write_text(yaml.safe_dump({"environment": "production", "master_key": "gw-" + "k7Qx" * 10,
                                      "auth": {"jwt_secret": "s3cr3t-" + "Zp9w" * 10}}))
    assert subprocess.run(check, capture_output=True, env=base, timeout=60).returncode == 0


@pytest.mark.parametrize("workers_flag", ["0", "two", "-3"])
def test_serve_refuses_a_bad_worker_count(tmp_path: Path, workers_flag: str) -> None:
    refused = _serve(tmp_path, f"--workers={workers_flag}")
    assert refused.returncode == 1
    assert "--workers" in refused.stderr and "Traceback" not in refused.stderr


def test_serve_refuses_a_port_in_use_before_starting_workers(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        refused = subprocess.run(
            [sys.executable, "-m", "llm_gateway.cli", "serve", "--port", str(port), "--workers", "2"],
            capture_output=True, text=True, cwd=tmp_path, env=base, timeout=60)
    assert refused.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in refused.stderr


def test_worker_count_and_drain_budget() -> None:
    assert workers.worker_count("auto") == workers.cpu_count() >= 1
    assert workers.worker_count("3") == 3
    # Most of the graceful timeout lets requests finish; the rest settles money.
    assert workers.drain_seconds(300) == 290
    assert 0 < workers.drain_seconds(6) < 6
