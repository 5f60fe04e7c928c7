"""``serve`` and ``check-config``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from llm_gateway.db.engine import Database
from llm_gateway.db.migrate import SchemaOutOfDate, ensure_schema
from llm_gateway.settings import Settings, load_settings


def check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    print(f"config OK: {len(settings.providers)} providers, {len(settings.models)} models")
    for p in settings.providers:
        print(f"  provider {p.name} ({p.kind}) {p.base_url or '(in process)'}")
    for m in settings.models:
        targets = ", ".join(f"{d.provider}/{d.model}" for d in m.deployments)
        print(f"  model {m.name} -> {targets}")
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
    import uvicorn

    from llm_gateway.app import create_app

    settings = load_settings(args.config)  # fail fast, before binding
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    refusal = asyncio.run(_prepare_schema(settings))
    if refusal is not None:
        print(f"llm-gateway: {refusal}", file=sys.stderr)
        return 1
    common = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "access_log": False,
        "loop": "uvloop",
        "http": "httptools",
        "timeout_keep_alive": 75,
    }
    if args.workers > 1:
        if args.config:
            os.environ["GATEWAY_CONFIG"] = os.path.abspath(args.config)
        uvicorn.run("llm_gateway.app:app_factory", factory=True, workers=args.workers, **common)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
    return 0
