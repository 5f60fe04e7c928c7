"""``migrate``, ``users …`` and ``keys …``: the database from the settings,
the same validation and service layer as the admin API (``accounts``).

SQLite schemas are upgraded in place first (as ``serve`` does); a PostgreSQL
schema that is behind asks for ``llm-gateway migrate``. Revocations and
disabled users reach running gateways through Redis when ``redis_url`` is
set; without it the gateways cache credentials for one second only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from llm_gateway import accounts
from llm_gateway.accounts import Invalidator, NewKey, NewUser, UserChanges
from llm_gateway.api.schemas_accounts import KeyOut, UserOut
from llm_gateway.auth.invalidation import CHANNEL, LONG_TTL
from llm_gateway.cli import CliError
from llm_gateway.db import migrate as schema
from llm_gateway.db.engine import Database
from llm_gateway.db.types import utcnow
from llm_gateway.errors import GatewayError
from llm_gateway.settings import Settings, load_settings

T = TypeVar("T")
R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)


class RedisPublisher:
    """Publishes on the channel every gateway process listens to."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self._client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)

    async def publish_key(self, key_hash: str) -> None:
        await self._publish(f"key:{key_hash}")

    async def publish_user(self, user_id: str) -> None:
        await self._publish(f"user:{user_id}")

    async def _publish(self, message: str) -> None:
        try:
            await self._client.publish(CHANNEL, message)
        except Exception as exc:
            print(f"llm-gateway: warning: could not tell running gateways through Redis ({type(exc).__name__}); "
                  f"they notice within {LONG_TTL:.0f} s", file=sys.stderr)

    async def aclose(self) -> None:
        await self._client.aclose()


class NoBroadcast:
    """Without Redis, gateways cache a credential for one second: nothing to send."""

    async def publish_key(self, key_hash: str) -> None:
        return None

    async def publish_user(self, user_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


@asynccontextmanager
async def _open(settings: Settings) -> AsyncIterator[tuple[AsyncSession, Invalidator]]:
    db = Database(settings.database_url)
    bus = RedisPublisher(settings.redis_url) if settings.redis_url else NoBroadcast()
    try:
        await schema.ensure_schema(db)
        async with db.session() as session:
            yield session, bus
    finally:
        await bus.aclose()
        await db.aclose()


def _run(settings: Settings, work: Callable[[AsyncSession, Invalidator], Awaitable[T]]) -> T:
    async def run() -> T:
        async with _open(settings) as (session, bus):
            return await work(session, bus)

    return _run_coroutine(settings, run())


def _run_coroutine(settings: Settings, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run it, turning every failure into one line for the operator."""
    try:
        return asyncio.run(coroutine)
    except GatewayError as exc:
        raise CliError(exc.message) from None
    except schema.SchemaOutOfDate as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:  # the database is down, refuses us, or is not there
        where = make_url(settings.database_url).render_as_string(hide_password=True)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CliError(f"cannot use the database {where}: {type(exc).__name__}{': ' + detail if detail else ''}"
                       ) from None


def _validated(model: type[M], fields: dict[str, Any]) -> M:
    """The API's validation, with the problems named by their options."""
    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = next((str(p) for p in err["loc"] if isinstance(p, str)), None)
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"--{field.replace('_', '-')}: {message}" if field else message)
        raise CliError("; ".join(problems)) from None


def _models(value: str | None) -> list[str] | None:
    return None if value is None else [m.strip() for m in value.split(",") if m.strip()]


async def _all_pages(fetch: Callable[[str | None], Awaitable[tuple[Sequence[R], bool]]]) -> list[R]:
    """Every row of a newest-first, ``after``-paged listing."""
    rows: list[R] = []
    after: str | None = None
    while True:
        page, more = await fetch(after)
        rows.extend(page)
        if not more or not page:
            return rows
        after = page[-1].id  # type: ignore[attr-defined]


def _print_json(item: BaseModel) -> None:
    print(json.dumps(item.model_dump(mode="json")))


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


# ---------------------------------------------------------------- commands


def migrate(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)

    async def run() -> str | None:
        db = Database(settings.database_url)
        try:
            await schema.upgrade(db)
            return await schema.current_revision(db)
        finally:
            await db.aclose()

    revision = _run_coroutine(settings, run())
    print(f"database schema at revision {revision} (head)")
    return 0


def users_create(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else args.password
    spec = _validated(NewUser, {"email": args.email, "password": password, "role": args.role, "rpm": args.rpm,
                                "tpm": args.tpm, "allowed_models": _models(args.allowed_models)})
    user = _run(settings, lambda session, _: accounts.create_user(session, spec))
    print(user.id)
    return 0


def users_credit(args: argparse.Namespace) -> int:
    """Through the ledger, like ``POST /admin/users/{id}/credits``: exact,
    never below zero, and a repeat with the same ``--idempotency-key`` is a
    no-op that prints the first transaction again."""
    from llm_gateway.api.billing import MAX_IDEMPOTENCY_KEY, NewCredit
    from llm_gateway.billing.ledger import Entry, Ledger
    from llm_gateway.billing.pricing import format_usd

    settings = load_settings(args.config)
    try:
        spec = _validated(NewCredit, {"amount_usd": args.amount, "note": args.note})
    except CliError as exc:
        raise CliError(str(exc).replace("--amount-usd", "--amount")) from None
    idempotency_key = args.idempotency_key or None
    if idempotency_key is not None and len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise CliError(f"--idempotency-key: at most {MAX_IDEMPOTENCY_KEY} characters")

    async def run() -> tuple[str, Entry, bool]:
        db = Database(settings.database_url)
        try:
            await schema.ensure_schema(db)
            async with db.session() as session:
                user_id = (await accounts.find_user(session, args.user)).id
            entry, created = await Ledger(db).credit(
                user_id, spec.amount_usd, note=spec.note, idempotency_key=idempotency_key)
            return user_id, entry, created
        finally:
            await db.aclose()

    user_id, entry, created = _run_coroutine(settings, run())
    print(entry.id)
    print(f"{entry.kind}: {format_usd(entry.amount_usd)} USD to {user_id}")
    print(f"balance_usd: {format_usd(entry.balance_after_usd)}")
    if not created:
        print("This idempotency key was used before: nothing changed; the balance shown is the one right "
              "after that transaction.", file=sys.stderr)
    return 0


def users_list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)

    async def everyone(session: AsyncSession, _: Invalidator) -> list[UserOut]:
        rows = await _all_pages(lambda after: accounts.list_users(session, 100, after))
        return [UserOut.of(u) for u in rows]

    users = _run(settings, everyone)
    if args.json:
        for user in users:
            _print_json(user)
    elif users:
        _table([("ID", "EMAIL", "ROLE", "ACTIVE", "BALANCE_USD")] + [
            (u.id, u.email, u.role, "yes" if u.is_active else "no", u.balance_usd) for u in users])
    return 0


def _set_active(args: argparse.Namespace, active: bool) -> int:
    settings = load_settings(args.config)
    changes = UserChanges(is_active=active)

    async def run(session: AsyncSession, bus: Invalidator) -> str:
        user = await accounts.find_user(session, args.user)
        return (await accounts.update_user(session, bus, user, changes)).id

    print(f"{'enabled' if active else 'disabled'} {_run(settings, run)}")
    return 0


def users_disable(args: argparse.Namespace) -> int:
    return _set_active(args, False)


def users_enable(args: argparse.Namespace) -> int:
    return _set_active(args, True)


def keys_create(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    spec = _validated(NewKey, {
        "name": args.name, "allowed_models": _models(args.allowed_models), "rpm": args.rpm, "tpm": args.tpm,
        "budget_usd": args.budget_usd, "budget_period": args.budget_period, "expires_at": args.expires_at,
    })

    async def run(session: AsyncSession, _: Invalidator) -> tuple[str, str, str]:
        user = await accounts.find_user(session, args.user)
        key, plaintext = await accounts.create_key(session, user, spec)
        return plaintext, key.id, key.prefix

    plaintext, key_id, prefix = _run(settings, run)
    print(plaintext)
    print(f"id: {key_id}")
    print(f"prefix: {prefix}")
    print("The key is shown only this once: store it now.", file=sys.stderr)
    return 0


def keys_revoke(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)

    async def run(session: AsyncSession, bus: Invalidator) -> KeyOut:
        key = await accounts.get_key(session, args.key_id)
        return KeyOut.of(await accounts.revoke_key(session, bus, key))

    key = _run(settings, run)
    assert key.revoked_at is not None
    print(f"revoked {key.id} ({key.prefix}…) at {key.revoked_at.isoformat()}")
    return 0


def _state(key: KeyOut) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= utcnow():
        return "expired"
    return "active"


def keys_list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)

    async def run(session: AsyncSession, _: Invalidator) -> list[KeyOut]:
        user_id = (await accounts.find_user(session, args.user)).id if args.user else None
        rows = await _all_pages(lambda after: accounts.list_keys(session, user_id, 100, after))
        return [KeyOut.of(k) for k in rows]

    keys = _run(settings, run)
    if args.json:
        for key in keys:
            _print_json(key)
    elif keys:
        _table([("ID", "PREFIX", "USER", "NAME", "STATE")] + [
            (k.id, k.prefix, k.user_id, k.name, _state(k)) for k in keys])
    return 0
