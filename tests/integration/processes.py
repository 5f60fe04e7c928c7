"""Real gateway processes (``llm-gateway serve``) for multi-process tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.fakes.server import free_port


@contextmanager
def gateway_process(
    config: dict[str, Any], folder: Path, name: str, workers: int = 1, log_level: str = "warning",
    started: list[subprocess.Popen[bytes]] | None = None,
) -> Iterator[str]:
    """Start ``llm-gateway serve`` with ``config``; yield its base URL (and
    append its process to ``started``, for a test that signals it)."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (folder / f"{name}.log").open("w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_gateway.cli", "serve", "--config", str(path), "--port", str(port),
         "--workers", str(workers), "--log-level", log_level],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder, env=env,
    )
    if started is not None:
        started.append(proc)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway {name} exited: {(folder / f'{name}.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway {name} did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextmanager
def gateway_processes(config: dict[str, Any], folder: Path, count: int) -> Iterator[list[str]]:
    with ExitStack() as stack:
        yield [stack.enter_context(gateway_process(config, folder, f"gw{i}")) for i in range(count)]
