"""Running wrk: making sure it is installed, running one pinned load, and
parsing its ``--latency`` report into numbers."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from procs import BenchError

LUA = Path(__file__).with_name("chat.lua")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
_PCT = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in", re.M)
_NON2XX = re.compile(r"^BENCH_NON2XX (\d+)", re.M)
_FIRST_BAD = re.compile(r"^BENCH_FIRST_NON2XX (.*)$", re.M)
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(slots=True)
class WrkResult:
    """One wrk run: throughput and latency percentiles in milliseconds."""

    concurrency: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_request: float | None = None  # the gateway's CPU time (user + system) per request


def ensure_wrk() -> str:
    """The path of ``wrk``, installing it with apt-get when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found; installing it with apt-get ...", flush=True)
    if subprocess.run(["apt-get", "install", "-y", "wrk"], capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise BenchError(
            "wrk is not installed and `apt-get install -y wrk` failed (no root, no network, or no apt?).\n"
            "Install wrk (https://github.com/wg/wrk) and run the benchmark again."
        )
    return found


def parse(output: str, concurrency: int, label: str = "wrk") -> WrkResult:
    """Read wrk's report; raise ``BenchError`` if any request failed."""
    problems = []
    bad = _NON2XX.search(output)
    wrk_bad = _WRK_NON2XX.search(output)
    count = max(int(bad.group(1)) if bad else 0, int(wrk_bad.group(1)) if wrk_bad else 0)
    if count:
        first = _FIRST_BAD.search(output)
        said = first.group(1) if first else "(not captured)"
        problems.append(f"{count} non-2xx responses; the first was: {said}")
    sock = _SOCKET.search(output)
    if sock and any(int(n) for n in sock.groups()):
        problems.append(sock.group(0))
    rps, total = _RPS.search(output), _TOTAL.search(output)
    pcts = {float(p): float(v) * _UNITS[u] for p, v, u in _PCT.findall(output)}
    if rps is None or total is None or 50.0 not in pcts or 99.0 not in pcts:
        problems.append("could not parse wrk's report")
    if problems or rps is None or total is None:
        raise BenchError(f"{label} at concurrency {concurrency}: " + "; ".join(problems) + f"\n{output}")
    return WrkResult(concurrency, int(total.group(1)), float(rps.group(1)), pcts[50.0], pcts[99.0])


def run_wrk(wrk: str, url: str, body_file: Path, concurrency: int, duration_s: float, cpu: int,
            api_key: str = "", label: str = "wrk", keys_file: Path | None = None) -> WrkResult:
    """One single-threaded wrk load pinned to ``cpu``; ``label`` names it in
    errors. With ``keys_file`` (API keys, one a line) every request carries
    one of them, picked at random, instead of ``api_key``."""
    argv = [
        "taskset", "-c", str(cpu), wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(duration_s))}s",
        "--timeout", "10s", "--latency", "-s", str(LUA), url, "--", str(body_file), api_key,
        str(keys_file) if keys_file is not None else "",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    if proc.returncode != 0:
        raise BenchError(f"{label}: wrk failed (status {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return parse(proc.stdout, concurrency, label)
