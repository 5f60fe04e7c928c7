"""The production topology with real processes, for tests: gateway instances
(``llm-gateway serve --workers N``: a gunicorn master and its uvicorn
workers) and nginx in front of them with ``deploy/nginx.conf``.

nginx is Debian's package (``make test`` installs it when missing). Outside
CI a missing nginx skips the tests that need it, with the reason; with
``CI=true`` it fails them.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.databases import IN_CI

ROOT = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = ROOT / "deploy" / "nginx.conf"


def require_nginx() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found is None:
        message = "nginx is not installed (`make test` installs Debian's package when run as root)"
        if IN_CI:
            pytest.fail(message + " — in CI it must be there")
        pytest.skip(message)
    return found


@dataclass
class Instance:
    """One gateway instance: ``llm-gateway serve`` in its own process group."""

    name: str
    config: Path
    folder: Path
    port: int
    workers: int
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_offset: int = 0  # where this start's lines begin in the log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}.log"

    def spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        if self.workers > 1:
            # An operator's directory (emptied at each start): a killed instance
            # leaves its files here, not in /tmp.
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.folder / f"metrics-{self.name}")
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "llm_gateway.cli", "serve", "--config", str(self.config),
                 "--port", str(self.port), "--workers", str(self.workers), "--log-level", "info"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.folder, env=env,
                start_new_session=True,  # its own process group: kill() takes the workers too
            )

    def wait_ready(self, timeout_s: float = 45) -> None:
        """Until every worker has finished its start-up (not just the first)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.log_tail()}")
            with self.log.open("rb") as f:
                f.seek(self.log_offset)
                text = f.read().decode(errors="replace")
            if text.count("Application startup complete") >= self.workers or (self.workers == 1 and self._healthy()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start in {timeout_s:.0f} s: {self.log_tail()}")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: this instance's master's children."""
        assert self.proc is not None
        return children(self.proc.pid)

    def terminate(self, timeout_s: float = 30) -> int:
        """SIGTERM to the master, as an orchestrator stops a container; its exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the whole instance (master and workers), as a crash would."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive:
            try:
                self.terminate(timeout_s=15)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers in the group


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name is in parentheses and may hold spaces: parse after it.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def established_connections(pid: int, local_port: int) -> int:
    """TCP connections that ``pid`` holds, accepted on ``local_port``."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                port = int(cols[1].rsplit(":", 1)[1], 16)
                if cols[3] == "01" and port == local_port:  # 01: ESTABLISHED
                    inodes[cols[9]] = port
    count = 0
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    count += 1
    return count


def simultaneous_posts(url: str, path: str, headers: dict[str, str], body: bytes,
                       count: int) -> list[tuple[int, bytes]]:
    """``count`` POSTs sent at the same moment, each on its own connection
    (all connected first, then all requests written in one tight loop), so a
    proxy in front has them all in flight at once and must open as many
    upstream connections; (status, body) of each."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}Content-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    sockets = [socket.create_connection((host, int(port)), timeout=20) for _ in range(count)]
    try:
        for sock in sockets:
            sock.sendall(request)
        replies = []
        for sock in sockets:
            response = http.client.HTTPResponse(sock)
            response.begin()
            replies.append((response.status, response.read()))
        return replies
    finally:
        for sock in sockets:
            sock.close()


def render_nginx(listen_port: int, upstreams: list[str]) -> str:
    """``deploy/nginx.conf`` with its placeholders filled, as the nginx image's
    envsubst does: the listen port and the replicas' addresses."""
    text = NGINX_TEMPLATE.read_text()
    values = {"NGINX_PORT": str(listen_port)} | {f"GATEWAY_UPSTREAM_{i + 1}": u for i, u in enumerate(upstreams)}
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    assert "${" not in text, "deploy/nginx.conf has a placeholder the test does not fill"
    return text


@dataclass
class Nginx:
    """nginx in the foreground with the deploy config, its files all under ``folder``."""

    binary: str
    folder: Path
    port: int
    upstreams: list[str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def main_config(self) -> Path:
        site = self.folder / "gateway.conf"
        site.write_text(render_nginx(self.port, self.upstreams))
        temp = "\n".join(f"    {kind}_temp_path {self.folder / kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        main = self.folder / "nginx.conf"
        # What the nginx image's own nginx.conf provides around the site file.
        main.write_text(
            f"daemon off;\nworker_processes 1;\npid {self.folder / 'nginx.pid'};\n"
            f"error_log {self.folder / 'error.log'} warn;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\n    default_type application/octet-stream;\n{temp}\n    include {site};\n}}\n"
        )
        return main

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, "-t", "-q", "-e", str(self.folder / "error.log"),
                               "-p", str(self.folder), "-c", str(self.main_config())],
                              capture_output=True, text=True)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        main = self.main_config()
        with (self.folder / "stdout.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-e", str(self.folder / "error.log"), "-p", str(self.folder), "-c", str(main)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.folder / 'error.log').read_text()[-2000:]}")
            try:
                httpx.get(f"{self.url}/health", timeout=1)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not listen") from None
                time.sleep(0.05)

    def reload(self) -> None:
        """``nginx -s reload``: new workers, with fresh passive-health state
        (a replica marked failed is tried again at once)."""
        assert self.proc is not None
        old = set(children(self.proc.pid))
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while old & set(children(self.proc.pid)) or not children(self.proc.pid):
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not reload")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # nginx's graceful stop
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
