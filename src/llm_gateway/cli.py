"""``llm-gateway``: serve, check-config."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from llm_gateway import __version__
from llm_gateway.settings import ConfigError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-gateway",
        description="One OpenAI-compatible API over OpenAI, Anthropic, Gemini and OpenAI-compatible servers.",
    )
    parser.add_argument("--version", action="version", version=f"llm-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP server")
    config_help = "YAML config file (default: $GATEWAY_CONFIG, else built-in defaults)"
    serve.add_argument("--config", metavar="F", help=config_help)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8080, help="port to bind (default: %(default)s)")
    serve.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default: %(default)s)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    check = sub.add_parser("check-config", help="validate a config file and print a summary")
    check.add_argument("--config", metavar="F", help=config_help)
    return parser


def _check_config(config: str | None) -> int:
    settings = load_settings(config)
    print(f"config OK: {len(settings.providers)} providers, {len(settings.models)} models")
    for p in settings.providers:
        print(f"  provider {p.name} ({p.kind}) {p.base_url or '(in process)'}")
    for m in settings.models:
        targets = ", ".join(f"{d.provider}/{d.model}" for d in m.deployments)
        print(f"  model {m.name} -> {targets}")
    return 0


def _serve(args: argparse.Namespace) -> int:
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return _check_config(args.config)
        return _serve(args)
    except ConfigError as exc:
        print(f"llm-gateway: configuration error:\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
