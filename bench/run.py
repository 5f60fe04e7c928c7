"""``make bench``: the gateway's overhead over a fast fake OpenAI upstream.

Measures, in one run, the DIRECT path (client -> fake upstream) and the
GATEWAY path (client -> gateway -> fake upstream): non-streaming throughput
and latency with wrk at several concurrencies, streaming time to first chunk
with sequential requests, the gateway's start-up time and its memory.

The gateway is pinned to core 0; the fake upstream, wrk and this process
(which runs the streaming client) share core 1.

Environment:
    BENCH_DURATION=10        seconds per wrk point
    BENCH_QUICK=1            a ~2 s smoke run (short points, fewer stream requests)
    BENCH_CONCURRENCY=1,16,64
    BENCH_STREAM_N=200       sequential streaming requests per path
    BENCH_CHUNK_DELAY_MS=2   upstream pause between stream chunks
    BENCH_CONFIG_EXTRA=F     same as --config-extra F
    BENCH_API_KEY=K          send "Authorization: Bearer K" (for configs with auth on)
    BENCH_WORKERS=N          also run each gateway with N worker processes (gunicorn),
                             pinned to cores 0..N-1, and print N-worker vs 1-worker throughput
    BENCH_DATABASE_URL=U     the gateways' database (migrated first), e.g. PostgreSQL for
                             several workers; default: SQLite in a temporary folder
    BENCH_REDIS_URL=U        the gateways' Redis (shared limits and revocations)
    BENCH_ENDPOINT=messages  load the gateways through POST /v1/messages (the same question
                             in Anthropic's dialect, translated to the OpenAI-format upstream)
                             instead of /v1/chat/completions; the direct path is unchanged
    BENCH_ENDPOINT=responses the same through POST /v1/responses (OpenAI's Responses API,
                             translated to chat completions: the upstream is openai_compatible)
    BENCH_PROFILE=production (or ``make bench-production``) the production profile, below
    BENCH_USERS=200          users of the production profile's many-users load

The production profile prints, in one run and side by side with each one's
ratio to the lean path: the LEAN path (SQLite, the master key: no billing, no
limits), and the PRODUCTION setup — PostgreSQL + Redis, ordinary users' API
keys, billing on (the model is priced, the users funded through the admin
API), limits on Redis checked on every request but set far above the load —
under two loads: ONE HOT USER (every request with one key) and BENCH_USERS
users at once (wrk picks one of their keys per request). Both production
loads run against the same gateway. PostgreSQL: a fresh database made on
postgresql://postgres@127.0.0.1:5432 and dropped afterwards, unless
BENCH_DATABASE_URL names one; Redis: BENCH_REDIS_URL, by default database
13 of 127.0.0.1:6379, whose ``llm-gateway:*`` keys (and only those) are
deleted before and after. The gateway's CPU time per request is measured
at every point.

``--config-extra F`` benches a second gateway, configured with the base
config deep-merged with YAML file F (mappings merge, lists and scalars
replace; ``${BENCH_UPSTREAM_BASE}`` names the fake upstream's /v1 URL).
Results go to ``.bench/results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

import production
from procs import BenchError, Child, free_port, install_signal_handlers, running, wait_for_health, wait_for_port
from report import PathResult, StreamStats, render, render_profile, write_json
from stream_client import measure
from wrk_runner import ensure_wrk, run_wrk

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = ROOT / ".venv" / "bin" / "python"
GATEWAY = ROOT / ".venv" / "bin" / "llm-gateway"
RESULTS = ROOT / ".bench" / "results.json"
GATEWAY_CPU, CLIENT_CPU = 0, 1


class Options:
    """The run's knobs, from the command line and ``BENCH_*`` variables."""

    def __init__(self, argv: list[str] | None = None) -> None:
        parser = argparse.ArgumentParser(
            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        parser.add_argument(
            "--config-extra", metavar="F", default=os.environ.get("BENCH_CONFIG_EXTRA") or None,
            help="also bench a gateway whose config is the base merged with YAML file F",
        )
        args = parser.parse_args(argv)
        self.quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
        self.duration_s = 2.0 if self.quick else float(os.environ.get("BENCH_DURATION", "10"))
        self.concurrency = [int(c) for c in os.environ.get("BENCH_CONCURRENCY", "1,16,64").split(",")]
        self.stream_n = int(os.environ.get("BENCH_STREAM_N", "30" if self.quick else "200"))
        self.chunk_delay_ms = float(os.environ.get("BENCH_CHUNK_DELAY_MS", "2"))
        self.warmup_s = 1.0 if self.quick else 3.0
        self.config_extra = Path(args.config_extra) if args.config_extra else None
        self.api_key = os.environ.get("BENCH_API_KEY", "")
        self.workers = int(os.environ.get("BENCH_WORKERS", "1"))
        self.database_url = os.environ.get("BENCH_DATABASE_URL") or None
        self.redis_url = os.environ.get("BENCH_REDIS_URL") or None
        self.endpoint = os.environ.get("BENCH_ENDPOINT", "chat")
        if self.endpoint not in ("chat", "messages", "responses"):
            raise BenchError(f"BENCH_ENDPOINT must be 'chat', 'messages' or 'responses', not {self.endpoint!r}")
        self.profile = os.environ.get("BENCH_PROFILE", "default")
        if self.profile not in ("default", "production"):
            raise BenchError(f"BENCH_PROFILE must be 'default' or 'production', not {self.profile!r}")
        self.users = int(os.environ.get("BENCH_USERS", "200"))


MASTER_KEY = "gw-bench-master-key-000000000000000000000000000"


def base_config(upstream_base: str, endpoint: str = "chat") -> dict[str, Any]:
    return {
        "master_key": MASTER_KEY,
        "providers": [{"name": "fake", "kind": "openai_compatible" if endpoint == "responses" else "openai",
                       "api_base": upstream_base, "api_key": "sk-bench"}],
        "models": [{
            "name": "bench-model",
            "deployments": [{"provider": "fake", "model": "gpt-4o-mini"}],
            "pricing": {"input_per_mtok": "0.15", "output_per_mtok": "0.60"},
        }],
        # Limits are checked on every request (the realistic hot path) but set
        # high enough never to refuse; the cache is off, since wrk sends one
        # body over and over (bench/cache-hit.yaml measures hits).
        "limits": {"default_user": {"rpm": 1_000_000_000, "tpm": 1_000_000_000_000}},
        "cache": {"enabled": False},
    }


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


_PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}


def _git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True)
    except OSError:
        return "unknown"
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def stream_stats(url: str, body: bytes, n: int, api_key: str) -> StreamStats:
    return StreamStats.of(asyncio.run(measure(url, body, n, api_key=api_key)))


def bench_direct(opts: Options, wrk: str, upstream: str, body_file: Path, stream_body: bytes) -> PathResult:
    result = PathResult("direct")
    url = f"{upstream}/chat/completions"
    run_wrk(wrk, url, body_file, 16, opts.warmup_s, CLIENT_CPU, opts.api_key, "direct warm-up")
    for c in opts.concurrency:
        print(f"  direct  c={c:<3} ...", flush=True)
        result.load.append(run_wrk(wrk, url, body_file, c, opts.duration_s, CLIENT_CPU, opts.api_key, "direct"))
    print("  direct  streaming ...", flush=True)
    result.stream = stream_stats(url, stream_body, opts.stream_n, opts.api_key)
    return result


class Shape:
    """One load on a gateway: whose keys send it. ``users`` 0: the master
    key; 1: one user's key (or BENCH_API_KEY); N: N users', one picked at
    random per request."""

    def __init__(self, name: str, users: int = 1) -> None:
        self.name = name
        self.users = users

    def credentials(self, base: str, master_key: str, opts: Options, tmp: Path) -> tuple[str, Path | None]:
        """The API key (for the stream client too) and the keys file, if any."""
        if self.users == 0:
            return master_key, None
        if self.users == 1:
            # The realistic path: an ordinary user's API key made through the admin API.
            return opts.api_key or production.funded_user_key(base, master_key), None
        print(f"  making {self.users} funded users and their keys ...", flush=True)
        keys = production.funded_user_keys(base, master_key, self.users)
        keys_file = tmp / f"keys-{self.users}.txt"
        keys_file.write_text("\n".join(keys) + "\n")
        return keys[0], keys_file


def bench_gateway(name: str, config: dict[str, Any], opts: Options, wrk: str, tmp: Path, upstream: str,
                  body_file: Path, stream_body: bytes, workers: int = 1,
                  shapes: list[Shape] | None = None) -> list[PathResult]:
    """Start one gateway, time its start-up, then warm it, load it under
    each of ``shapes`` in turn (one result each), and stop it. With
    ``workers`` > 1 it runs gunicorn with that many workers, allowed on
    cores 0..workers-1 (so the load generator's core is shared with one)."""
    shapes = shapes or [Shape(name)]
    results = [PathResult(shape.name, config=config) for shape in shapes]
    config_file = tmp / f"gateway-{len(list(tmp.glob('gateway-*.yaml')))}.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["BENCH_UPSTREAM_BASE"] = upstream
    argv = [str(GATEWAY), "serve", "--config", str(config_file), "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers)]
    base = f"http://127.0.0.1:{port}"
    url = f"{base}{_PATHS[opts.endpoint]}"
    cpus = ",".join(str(GATEWAY_CPU + i) for i in range(workers))
    child = Child(f"gateway ({name})", argv, cpus, tmp / f"{config_file.stem}.log", tmp, env)
    master_key = str(config.get("master_key") or MASTER_KEY)
    with running(child) as gw:
        startup_s = wait_for_health(gw, f"{base}/health")
        print(f"  gateway ({name}) up in {startup_s:.2f}s", flush=True)
        for shape, result in zip(shapes, results, strict=True):
            result.startup_s = startup_s
            api_key, keys_file = shape.credentials(base, master_key, opts, tmp)
            label = f"gateway ({shape.name})"
            print(f"  {label}: warming up ...", flush=True)
            run_wrk(wrk, url, body_file, 16, opts.warmup_s, CLIENT_CPU, api_key, f"{label} warm-up", keys_file)
            asyncio.run(measure(url, stream_body, n=0, warmup=20, api_key=api_key))
            result.rss_after_warmup_mib = group_rss_mib(gw)
            for c in opts.concurrency:
                print(f"  gateway c={c:<3} ...", flush=True)
                cpu_before = group_cpu_s(gw)
                point = run_wrk(wrk, url, body_file, c, opts.duration_s, CLIENT_CPU, api_key, label, keys_file)
                point.cpu_ms_per_request = (group_cpu_s(gw) - cpu_before) * 1000 / max(1, point.requests)
                result.load.append(point)
            print("  gateway streaming ...", flush=True)
            result.stream = stream_stats(url, stream_body, opts.stream_n, api_key)
            result.rss_after_load_mib = group_rss_mib(gw)
            gw.check_alive()
    return results


def _children(pid: int) -> list[Path]:
    """``/proc`` entries of ``pid``'s direct children (the workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(pid):
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(entry)
            except (OSError, ValueError, IndexError):
                continue
    return found


def group_rss_mib(child: Child) -> float:
    """RSS of the gateway and, with several workers, of its worker processes."""
    total = child.rss_mib()
    for entry in _children(child.pid):
        try:
            total += next(int(line.split()[1]) for line in (entry / "status").read_text().splitlines()
                          if line.startswith("VmRSS:")) / 1024
        except (OSError, StopIteration, ValueError):
            continue
    return total


def group_cpu_s(child: Child) -> float:
    """CPU seconds (user + system, all threads) of the gateway and its workers so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in [Path(f"/proc/{child.pid}"), *_children(child.pid)]:
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def migrate(database_url: str, tmp: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATABASE_URL"] = database_url
    done = subprocess.run([str(GATEWAY), "migrate"], cwd=tmp, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"llm-gateway migrate failed on BENCH_DATABASE_URL:\n{done.stderr}")


def render_scaling(pairs: list[tuple[PathResult, PathResult]], workers: int) -> str:
    """Throughput of each gateway with ``workers`` processes against one."""
    lines = ["", f"{workers} workers on cores {GATEWAY_CPU}..{GATEWAY_CPU + workers - 1} (sharing core {CLIENT_CPU} "
                 f"with wrk and the fake upstream) against 1 worker on core {GATEWAY_CPU}:"]
    for one, many in pairs:
        lines += ["", f"== {workers} workers vs 1: {one.name} ==",
                  f"{'conc':>5} {'1 worker rps':>13} {f'{workers} workers rps':>15} {'ratio':>6}"]
        single = {r.concurrency: r for r in one.load}
        for r in many.load:
            if r.concurrency in single:
                base = single[r.concurrency].rps
                lines.append(f"{r.concurrency:>5} {base:>13.0f} {r.rps:>15.0f} {r.rps / base:>6.2f}")
    return "\n".join(lines)


Gateways = tuple[list[PathResult], list[tuple[PathResult, PathResult]]]


def default_gateways(opts: Options, wrk: str, tmp: Path, upstream: str, body_file: Path,
                     stream_body: bytes) -> Gateways:
    """The base gateway (an ordinary user's key, billing on SQLite unless
    BENCH_DATABASE_URL) and the --config-extra one, each also with
    BENCH_WORKERS workers."""
    shared = {k: v for k, v in (("database_url", opts.database_url), ("redis_url", opts.redis_url)) if v}
    if opts.database_url:
        migrate(opts.database_url, tmp)
    configs = [("base", base_config(upstream, opts.endpoint) | shared)]
    if opts.config_extra is not None:
        extra = yaml.safe_load(opts.config_extra.read_text()) or {}
        if not isinstance(extra, dict):
            raise BenchError(f"{opts.config_extra}: the top level must be a mapping")
        base = base_config(upstream, opts.endpoint) | shared
        configs.append((f"extra {opts.config_extra.name}", deep_merge(base, extra)))
    gateways: list[PathResult] = []
    pairs: list[tuple[PathResult, PathResult]] = []
    for name, config in configs:
        gateways += bench_gateway(name, config, opts, wrk, tmp, upstream, body_file, stream_body)
        if opts.workers > 1:
            gateways += bench_gateway(f"{name}, {opts.workers} workers", config, opts, wrk, tmp, upstream,
                                      body_file, stream_body, workers=opts.workers)
            pairs.append((gateways[-2], gateways[-1]))
    return gateways, pairs


def production_gateways(opts: Options, wrk: str, tmp: Path, upstream: str, body_file: Path,
                        stream_body: bytes) -> Gateways:
    """The lean path (SQLite, master key), then the production setup under
    one hot user and under many users (and with BENCH_WORKERS workers)."""
    lean = bench_gateway("lean: SQLite, master key", base_config(upstream), opts, wrk, tmp, upstream,
                         body_file, stream_body, shapes=[Shape("lean: SQLite, master key", users=0)])
    redis_url = opts.redis_url or production.REDIS_URL
    gateways, pairs = list(lean), []
    with contextlib.ExitStack() as stack:
        database_url = opts.database_url or stack.enter_context(production.fresh_database())
        migrate(database_url, tmp)
        config = base_config(upstream) | {"database_url": database_url, "redis_url": redis_url}
        for workers in sorted({1, opts.workers}):
            production.clear_gateway_keys(redis_url)
            suffix = f", {workers} workers" if workers > 1 else ""
            shapes = [Shape(f"production: one hot user{suffix}", users=1),
                      Shape(f"production: {opts.users} users{suffix}", users=opts.users)]
            gateways += bench_gateway(f"production{suffix}", config, opts, wrk, tmp, upstream, body_file,
                                      stream_body, workers=workers, shapes=shapes)
        production.clear_gateway_keys(redis_url)
    if opts.workers > 1:
        pairs = [(gateways[1], gateways[3]), (gateways[2], gateways[4])]
    return gateways, pairs


def run(opts: Options) -> None:
    if not {GATEWAY_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
        raise BenchError(f"the benchmark pins work to cores {GATEWAY_CPU} and {CLIENT_CPU}; "
                         f"this process may only use {sorted(os.sched_getaffinity(0))}")
    if not GATEWAY.exists():
        raise BenchError(f"{GATEWAY} not found; create the venv and install the project first")
    if not set(range(GATEWAY_CPU, GATEWAY_CPU + opts.workers)) <= os.sched_getaffinity(0):
        raise BenchError(f"BENCH_WORKERS={opts.workers} needs cores {GATEWAY_CPU}..{GATEWAY_CPU + opts.workers - 1}")
    wrk = ensure_wrk()
    os.sched_setaffinity(0, {CLIENT_CPU})  # the streaming client runs in this process
    body = (BENCH / "request.json").read_bytes().strip()
    stream_body = body[:-1] + b',"stream":true,"stream_options":{"include_usage":true}}'
    gw_body, gw_stream_body = body, stream_body
    if opts.endpoint != "chat":
        gw_body = (BENCH / f"request-{opts.endpoint}.json").read_bytes().strip()
        gw_stream_body = gw_body[:-1] + b',"stream":true}'
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": _git_commit(), "quick": opts.quick,
        "duration_s": opts.duration_s, "concurrency": opts.concurrency, "stream_requests": opts.stream_n,
        "chunk_delay_ms": opts.chunk_delay_ms, "request_bytes": len(body),
        "gateway_cpu": GATEWAY_CPU, "client_cpu": CLIENT_CPU, "workers": opts.workers,
        "gateway_endpoint": _PATHS[opts.endpoint],
    }
    with tempfile.TemporaryDirectory(prefix="llm-gateway-bench-") as tmp_name:
        tmp = Path(tmp_name)
        body_file = tmp / "request.json"
        body_file.write_bytes(body)
        gw_body_file = tmp / "gateway-request.json"
        gw_body_file.write_bytes(gw_body)
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}/v1"
        up_argv = [str(PYTHON), str(BENCH / "fake_upstream.py"), "--port", str(up_port),
                   "--chunk-delay-ms", str(opts.chunk_delay_ms)]
        with running(Child("fake upstream", up_argv, CLIENT_CPU, tmp / "upstream.log")) as up:
            wait_for_port(up, up_port)
            print(f"fake upstream on {upstream}; direct path:", flush=True)
            direct = bench_direct(opts, wrk, upstream, body_file, stream_body)
            if opts.profile == "production":
                gateways, pairs = production_gateways(opts, wrk, tmp, upstream, gw_body_file, gw_stream_body)
            else:
                gateways, pairs = default_gateways(opts, wrk, tmp, upstream, gw_body_file, gw_stream_body)
            up.check_alive()
    print()
    print(render(meta, direct, gateways))
    if pairs:
        print(render_scaling(pairs, opts.workers))
    if opts.profile == "production":
        print(render_profile(meta, direct, gateways[0], gateways[1:1 + 2]))
    write_json(RESULTS, meta, direct, gateways)
    print(f"\nresults written to {RESULTS.relative_to(ROOT)}")


def main() -> int:
    install_signal_handlers()
    try:
        run(Options())
    except BenchError as exc:
        print(f"\nbench FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench interrupted; child processes stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
