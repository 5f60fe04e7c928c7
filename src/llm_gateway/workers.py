"""Running several worker processes: the gunicorn worker class, the worker
count, the graceful-shutdown budget and Prometheus's multi-process
directory. Used by ``llm-gateway serve --workers N`` and by
``gunicorn_conf`` (for operators who run gunicorn themselves).

Shutdown budget: gunicorn's ``graceful_timeout`` bounds the whole exit of a
worker. Uvicorn gets most of it to let in-flight requests and streams finish
(then cancels them: a cut stream is charged for what it produced); the rest
is left for the app's lifespan to settle money and flush usage records.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

# Longer than a long stream: a reasoning model may stream for minutes.
DEFAULT_GRACEFUL_TIMEOUT_S = 300
# Kept back from the drain for settling money and flushing usage and traces.
SETTLE_BUDGET_S = 10
# Above nginx's upstream keepalive_timeout (60 s in deploy/nginx.conf): the
# proxy, not the gateway, closes an idle connection, so it never sends a
# request on a connection the gateway is closing.
KEEP_ALIVE_S = 75

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# "<pid>:<path>" when the master <pid> created the directory, so that it (and
# not a worker, which inherits the environment and the master's call stack)
# removes it at exit.
_OWNED_ENV = "LLM_GATEWAY_OWNS_MULTIPROC_DIR"
_PREPARED_ENV = "LLM_GATEWAY_MULTIPROC_PREPARED"  # the directory already emptied by this start


def drain_seconds(graceful_timeout_s: int) -> int:
    """How long uvicorn lets in-flight requests run after SIGTERM."""
    settle = min(SETTLE_BUDGET_S, graceful_timeout_s / 3)
    return max(1, int(graceful_timeout_s - settle))


def cpu_count() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU
    quota (a container's ``--cpus``), at least 1."""
    count = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period) + 0.5)))
    except (OSError, ValueError):
        pass
    return max(1, count)


def worker_count(value: str | int | None) -> int:
    """``N`` (at least 1) or ``auto`` (one per CPU); raises ``ValueError``."""
    if value is None or str(value).strip().lower() in ("", "auto"):
        return cpu_count()
    count = int(value)
    if count < 1:
        raise ValueError(f"workers must be at least 1 or 'auto', not {value}")
    return count


def prepare_metrics_dir() -> str:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory, before any
    worker starts (and before ``prometheus_client`` is imported here, which
    picks its storage at import): a fresh temporary one, or the operator's,
    emptied of a previous run's files. Idempotent within one start."""
    path = os.environ.get(MULTIPROC_ENV)
    if path and os.environ.get(_PREPARED_ENV) == path:
        return path
    if path:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        for entry in folder.glob("*.db"):
            entry.unlink(missing_ok=True)
    else:
        path = tempfile.mkdtemp(prefix="llm-gateway-metrics-")
        os.environ[MULTIPROC_ENV] = path
        os.environ[_OWNED_ENV] = f"{os.getpid()}:{path}"
    os.environ[_PREPARED_ENV] = path
    return path


def forget_worker_metrics(pid: int) -> None:
    """A worker exited: drop its live gauges (in-flight requests) from the sum."""
    if not os.environ.get(MULTIPROC_ENV):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def remove_metrics_dir() -> None:
    """At the master's exit: remove the directory if this process created it."""
    path = os.environ.get(MULTIPROC_ENV)
    if path and os.environ.get(_OWNED_ENV) == f"{os.getpid()}:{path}":
        shutil.rmtree(path, ignore_errors=True)


class GatewayWorker(UvicornWorker):  # type: ignore[misc]
    """Uvicorn in a gunicorn worker, set up like ``llm-gateway serve``'s
    single process: uvloop and httptools, no access log (the gateway logs each
    request itself), the lifespan required (a worker that cannot start — an
    out-of-date schema — stops the master instead of serving), and a drain on
    SIGTERM bounded by gunicorn's ``graceful_timeout``."""

    CONFIG_KWARGS: dict[str, Any] = {"loop": "uvloop", "http": "httptools", "lifespan": "on", "access_log": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = drain_seconds(self.cfg.graceful_timeout)

    async def _serve(self) -> None:
        # The app is loaded by now: its settings give the header and body read timeouts.
        from llm_gateway.protocol import guarded_protocol

        settings = self.wsgi.state.gateway.settings
        self.config.http = guarded_protocol(settings.http_header_timeout_s, settings.http_body_timeout_s)
        await super()._serve()
