"""Gunicorn configuration for the gateway.

``llm-gateway serve --workers N`` loads it (and overrides bind, workers and
graceful timeout from its flags). To run gunicorn yourself::

    gunicorn -c python:llm_gateway.gunicorn_conf 'llm_gateway.app:app_factory()'

Being a gunicorn config file, it reads its environment when gunicorn loads
it: ``GATEWAY_BIND`` (default ``0.0.0.0:8080``), ``GATEWAY_WORKERS`` (a
number or ``auto``: one per CPU, the default), ``GATEWAY_GRACEFUL_TIMEOUT_S``
and ``FORWARDED_ALLOW_IPS`` (proxies whose ``X-Forwarded-For`` is trusted).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from llm_gateway import workers as _workers

bind = [os.environ.get("GATEWAY_BIND") or "0.0.0.0:8080"]
workers = _workers.worker_count(os.environ.get("GATEWAY_WORKERS"))
worker_class = "llm_gateway.workers.GatewayWorker"
# The whole exit of a worker after SIGTERM; see llm_gateway.workers.
graceful_timeout = int(os.environ.get("GATEWAY_GRACEFUL_TIMEOUT_S") or _workers.DEFAULT_GRACEFUL_TIMEOUT_S)
keepalive = _workers.KEEP_ALIVE_S
# A worker whose event loop stops ticking this long is restarted.
timeout = 60
# Bursts of new connections while workers are busy wait here, not refused.
backlog = 2048
# Each worker listens on its own SO_REUSEPORT socket and the kernel spreads
# new connections evenly over them (gunicorn >= 24). On one shared socket the
# first worker to wake accepts a whole burst: clients that keep their
# connections (nginx's keep-alive pool, a load generator) would then all sit
# on one worker while the others idle.
reuse_port = True
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS") or "127.0.0.1,::1"
# Heartbeat files on a RAM disk: a container's overlay /tmp can stall the
# heartbeat under disk pressure and get healthy workers killed.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Several gateways on one host must not fight over gunicorn's default
# control-socket path (gunicorn >= 25; ignored by older versions).
control_socket_disable = True
# gunicorn's own lines (start, worker exits) as JSON on standard output, like
# every other line; no access log: the gateway writes its own request lines.
accesslog = None
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "llm_gateway.observability.logs.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
    "root": {"handlers": ["stdout"]},  # the level stays what --log-level set
    "loggers": {
        # uvicorn's workers copy this logger's handlers for their own lines.
        "gunicorn.error": {"handlers": ["stdout"], "propagate": False},
        "gunicorn.access": {"handlers": [], "propagate": False},
    },
}
proc_name = "llm-gateway"


class _ListeningAt(logging.Filter):
    """gunicorn's "Listening at: %s (%s)" names the master's sockets; with
    reuse_port the master opens none (each worker binds its own), so the line
    would read "Listening at:  (pid)". Fill in the addresses bound."""

    def __init__(self, binds: list[str]) -> None:
        super().__init__()
        self._where = ",".join(b if b.startswith(("unix:", "fd://")) else f"http://{b}" for b in binds)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Listening at: %s (%s)" and isinstance(record.args, tuple) and record.args[:1] == ("",):
            record.args = (self._where, *record.args[1:])
        return True


def on_starting(server: Any) -> None:
    # Before any worker forks: every worker writes its metrics to this directory.
    _workers.prepare_metrics_dir()
    # Before gunicorn logs where it listens (right after this hook).
    server.log.error_log.addFilter(_ListeningAt(list(server.cfg.bind)))


def when_ready(server: Any) -> None:
    # With reuse_port the master itself listens on nothing; say where the workers will.
    server.log.info("workers listen on %s, %d of them, a socket each", ", ".join(server.cfg.bind),
                    server.cfg.workers)


def child_exit(server: Any, worker: Any) -> None:
    _workers.forget_worker_metrics(worker.pid)


def on_exit(server: Any) -> None:
    _workers.remove_metrics_dir()
