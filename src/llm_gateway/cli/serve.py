"""``serve`` and ``check-config``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from llm_gateway.catalogue import unpriced_models, unpriced_warning
from llm_gateway.db.engine import Database
from llm_gateway.db.migrate import SchemaOutOfDate, ensure_schema
from llm_gateway.observability.logs import configure_logging
from llm_gateway.settings import Settings, load_settings


def check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    print(f"config OK: {len(settings.providers)} providers, {len(settings.models)} models")
    for p in settings.providers:
        print(f"  provider {p.name} ({p.kind}) {p.base_url or '(in process)'}")
    for m in settings.models:
        targets = ", ".join(f"{d.provider}/{d.model}" for d in m.deployments)
        print(f"  model {m.name} -> {targets}")
    for name in unpriced_models(settings):
        print(f"  warning: model {name} has no pricing: it is free for every caller, even with a zero balance")
    return 0


async def _prepare_schema(settings: Settings) -> str | None:
    """Upgrade SQLite / check PostgreSQL once, before any worker starts.
    Returns a reason to refuse to start, or None. An unreachable database
    is not a reason: the gateway starts degraded and retries."""
    db = Database(settings.database_url)
    try:
        await ensure_schema(db)
    except SchemaOutOfDate as exc:
        return str(exc)
    except Exception as exc:
        logging.getLogger("llm_gateway").warning(
            "database unreachable at start-up (%s); starting anyway", type(exc).__name__
        )
    finally:
        await db.aclose()
    return None


def serve(args: argparse.Namespace) -> int:
    from llm_gateway import workers as w
    from llm_gateway.cli import CliError

    workers = args.workers or os.environ.get("GATEWAY_WORKERS") or "1"
    try:
        count = w.worker_count(workers)
    except ValueError:
        raise CliError(f"--workers (or GATEWAY_WORKERS) must be a whole number of at least 1, or auto, "
                       f"not {workers!r}") from None
    given = args.graceful_timeout
    if given is None:
        given = os.environ.get("GATEWAY_GRACEFUL_TIMEOUT_S") or w.DEFAULT_GRACEFUL_TIMEOUT_S
    try:
        graceful = int(given)
        if graceful <= 0:
            raise ValueError
    except ValueError:
        raise CliError(f"--graceful-timeout (or GATEWAY_GRACEFUL_TIMEOUT_S) must be a whole number of seconds "
                       f"above 0, not {given!r}") from None
    if count == 1:
        return _serve(args, graceful, count)
    # Before anything imports prometheus_client: it picks multi-process
    # storage at import, and the workers inherit this process's imports.
    w.prepare_metrics_dir()
    # What gunicorn_conf reads, validated (it is imported by the master).
    os.environ["GATEWAY_WORKERS"] = str(count)
    os.environ["GATEWAY_GRACEFUL_TIMEOUT_S"] = str(graceful)
    try:
        return _serve(args, graceful, count)
    finally:
        # However the master ends (gunicorn exits through SystemExit). Workers
        # unwind through here too, and leave it: it is the master's.
        w.remove_metrics_dir()


def _serve(args: argparse.Namespace, graceful: int, count: int) -> int:
    from llm_gateway import workers as w
    from llm_gateway.cli import CliError

    settings = load_settings(args.config)  # fail fast, before binding
    configure_logging(args.log_level)  # JSON lines on standard output (SPEC §8)
    unpriced = unpriced_models(settings)
    if unpriced:  # once, here in the parent process, not once per worker
        logging.getLogger("llm_gateway").warning("%s", unpriced_warning(unpriced))
    refusal = asyncio.run(_prepare_schema(settings))
    if refusal is not None:
        print(f"llm-gateway: {refusal}", file=sys.stderr)
        return 1
    if count > 1:
        taken = _port_taken(args.host, args.port)
        if taken is not None:
            raise CliError(taken)
        if args.config:
            os.environ["GATEWAY_CONFIG"] = os.path.abspath(args.config)
        _run_gunicorn(args, count, graceful)
        return 0
    import uvicorn

    from llm_gateway.app import create_app
    from llm_gateway.protocol import guarded_protocol

    uvicorn.run(
        # log_config=None: uvicorn's own lines go through the JSON handler too.
        create_app(settings), host=args.host, port=args.port, log_level=args.log_level, access_log=False,
        log_config=None,
        loop="uvloop", http=guarded_protocol(settings.http_header_timeout_s, settings.http_body_timeout_s),
        timeout_keep_alive=w.KEEP_ALIVE_S,
        timeout_graceful_shutdown=w.drain_seconds(graceful),
    )
    return 0


def _port_taken(host: str, port: int) -> str | None:
    """Why the workers could not listen on ``host:port``, or None. Each
    worker binds its own SO_REUSEPORT socket, which would quietly join
    another server's on the same port: check once, plainly, first."""
    import socket

    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def _run_gunicorn(args: argparse.Namespace, workers: int, graceful_timeout_s: int) -> None:
    """gunicorn with ``llm_gateway.gunicorn_conf``, bound and sized by the flags.
    Each worker builds its own app (pools, caches, Redis clients are per
    process); the modules are imported once here so that workers fork with
    them loaded (quicker start, shared memory)."""
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

    import llm_gateway.app

    host = f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host
    options = {"bind": [f"{host}:{args.port}"], "workers": workers, "graceful_timeout": graceful_timeout_s,
               "loglevel": args.log_level}

    class Gateway(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            from llm_gateway import gunicorn_conf

            defaults = {k: v for k, v in vars(gunicorn_conf).items() if k in self.cfg.settings}
            for key, value in (defaults | options).items():
                self.cfg.set(key, value)

        def load(self) -> object:
            return llm_gateway.app.app_factory()

    Gateway().run()
