"""Child processes for the benchmark: free ports, CPU-pinned spawns in their
own process groups, readiness polling, RSS, and clean-up that always runs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path


class BenchError(RuntimeError):
    """A benchmark step failed; the message says what and why."""


def free_port() -> int:
    """A port the kernel considers free right now (a small race is acceptable here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Child:
    """A pinned child process in its own session, logging to a file."""

    def __init__(self, name: str, argv: Sequence[str], cpu: int | str, log: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        self.started = time.perf_counter()
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["taskset", "-c", str(cpu), *argv], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=cwd, env=env, start_new_session=True,
            )

    @property
    def pid(self) -> int:
        # taskset execs the command, so the pid is the program's own.
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited with status {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def rss_mib(self) -> float:
        """Resident set size from ``/proc/<pid>/status`` (VmRSS), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise BenchError(f"no VmRSS for {self.name} (pid {self.pid})")

    def stop(self) -> None:
        """SIGTERM the whole process group, then SIGKILL whatever is left."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers in the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


@contextlib.contextmanager
def running(child: Child) -> Iterator[Child]:
    """Stop ``child`` however the block ends (error, Ctrl-C, SIGTERM)."""
    try:
        yield child
    finally:
        child.stop()


def wait_for_port(child: Child, port: int, timeout_s: float = 15.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        child.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.005)
    raise BenchError(
        f"{child.name} did not listen on port {port} within {timeout_s:.0f}s:\n{child.log_tail()}"
    )


def wait_for_health(child: Child, url: str, timeout_s: float = 30.0) -> float:
    """Poll ``url`` until it answers 200; return seconds since the child was spawned."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        child.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return time.perf_counter() - child.started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.005)
    raise BenchError(f"{child.name} was not healthy at {url} within {timeout_s:.0f}s:\n{child.log_tail()}")


def install_signal_handlers() -> None:
    """Make SIGINT raise ``KeyboardInterrupt`` (even where a shell started us
    with it ignored) and SIGTERM raise ``SystemExit``, so that ``finally``
    blocks stop the children."""

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
