"""``llm-gateway``: serve, check-config, migrate, users, keys, master-key.

The whole command line is declared here; the commands live in ``serve`` and
``accounts``. Every failure an operator can cause prints one clear line on
standard error and exits non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from llm_gateway import __version__
from llm_gateway.settings import ConfigError

CONFIG_HELP = "YAML config file (default: $GATEWAY_CONFIG, else built-in defaults)"


class CliError(Exception):
    """A failure phrased for the operator; printed without a traceback."""


Command = Callable[[argparse.Namespace], int]


def _lazy(module: str, name: str) -> Command:
    """Import a command's module only when it runs: ``--help`` and ``serve``
    stay quick and do not load the database layer."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        command: Command = getattr(importlib.import_module(f"llm_gateway.cli.{module}"), name)
        return command(args)

    return run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-gateway",
        description="One OpenAI-compatible API over OpenAI, Anthropic, Gemini and OpenAI-compatible servers.",
    )
    parser.add_argument("--version", action="version", version=f"llm-gateway {__version__}")
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", metavar="F", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[config], help="run the HTTP server")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8080, help="port to bind (default: %(default)s)")
    serve.add_argument("--workers", default=None, metavar="N",
                       help="worker processes, or 'auto' for one per CPU (default: $GATEWAY_WORKERS, else 1)")
    serve.add_argument("--graceful-timeout", type=int, default=None, metavar="S",
                       help="on SIGTERM, seconds to let requests and streams finish and settle "
                            "(default: $GATEWAY_GRACEFUL_TIMEOUT_S, else 300)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_lazy("serve", "serve"))

    check = sub.add_parser("check-config", parents=[config], help="validate a config file and print a summary")
    check.set_defaults(func=_lazy("serve", "check_config"))

    migrate = sub.add_parser("migrate", parents=[config], help="create or upgrade the database schema (safe to repeat)")
    migrate.set_defaults(func=_lazy("accounts", "migrate"))

    users = sub.add_parser("users", help="create, credit, list, disable and enable users").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    create = users.add_parser("create", parents=[config], help="create a user; prints its id")
    create.add_argument("--email", required=True)
    password = create.add_mutually_exclusive_group()
    password.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    password.add_argument("--password", metavar="P", help="the password (visible to other local users: prefer stdin)")
    create.add_argument("--role", choices=["user", "admin"], default=None)
    _limits(create)
    create.set_defaults(func=_lazy("accounts", "users_create"))
    credit = users.add_parser("credit", parents=[config],
                              help="add credit (or, negative, take it away); prints the transaction and balance")
    credit.add_argument("--user", required=True, help="user id or email")
    credit.add_argument("--amount", required=True, metavar="USD", help="e.g. 10.00; negative for an adjustment")
    credit.add_argument("--note", metavar="N", help="shown in the user's ledger")
    credit.add_argument("--idempotency-key", metavar="K", help="running the command again with K changes nothing")
    credit.set_defaults(func=_lazy("accounts", "users_credit"))
    listing = users.add_parser("list", parents=[config], help="list users, newest first")
    listing.add_argument("--json", action="store_true", help="one JSON user object a line")
    listing.set_defaults(func=_lazy("accounts", "users_list"))
    for action, verb in (("disable", "refuse every credential of"), ("enable", "re-enable")):
        toggle = users.add_parser(action, parents=[config], help=f"{verb} a user at once")
        toggle.add_argument("user", help="user id or email")
        toggle.set_defaults(func=_lazy("accounts", f"users_{action}"))

    keys = sub.add_parser("keys", help="create, revoke and list API keys").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    create = keys.add_parser("create", parents=[config], help="create a key; prints it once")
    create.add_argument("--user", required=True, help="user id or email")
    create.add_argument("--name", required=True)
    _limits(create)
    create.add_argument("--budget-usd", metavar="X", help="spend limit per --budget-period, e.g. 25.00")
    create.add_argument("--budget-period", choices=["day", "month"])
    create.add_argument("--expires-at", metavar="ISO", help="ISO-8601 time, UTC unless it names an offset")
    create.set_defaults(func=_lazy("accounts", "keys_create"))
    revoke = keys.add_parser("revoke", parents=[config], help="revoke a key on every gateway at once")
    revoke.add_argument("key_id", help="the key's id (key_…)")
    revoke.set_defaults(func=_lazy("accounts", "keys_revoke"))
    listing = keys.add_parser("list", parents=[config], help="list keys, newest first")
    listing.add_argument("--user", help="only this user's keys (id or email)")
    listing.add_argument("--json", action="store_true", help="one JSON key object a line")
    listing.set_defaults(func=_lazy("accounts", "keys_list"))

    master = sub.add_parser("master-key", help="show or rotate the master key").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    shown = master.add_parser("status", parents=[config],
                              help="where the master key comes from, its prefix and age (never the key)")
    shown.set_defaults(func=_lazy("master_key", "status"))
    rotate = master.add_parser("rotate", parents=[config],
                               help="replace a generated master key; prints the new one once, the old one "
                                    "stops working on every gateway")
    rotate.set_defaults(func=_lazy("master_key", "rotate"))
    return parser


def _limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rpm", type=int, metavar="N", help="requests per minute")
    parser.add_argument("--tpm", type=int, metavar="N", help="tokens per minute")
    parser.add_argument("--allowed-models", metavar="a,b", help="comma-separated model names (default: all)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"llm-gateway: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"llm-gateway: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
