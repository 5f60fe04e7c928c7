"""``serve`` and ``check-config``."""

from __future__ import annotations

import argparse
import logging
import os

from llm_gateway.settings import load_settings


def check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    print(f"config OK: {len(settings.providers)} providers, {len(settings.models)} models")
    for p in settings.providers:
        print(f"  provider {p.name} ({p.kind}) {p.base_url or '(in process)'}")
    for m in settings.models:
        targets = ", ".join(f"{d.provider}/{d.model}" for d in m.deployments)
        print(f"  model {m.name} -> {targets}")
    return 0


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from llm_gateway.app import create_app

    settings = load_settings(args.config)  # fail fast, before binding
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
