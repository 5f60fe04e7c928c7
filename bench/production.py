"""The production profile's surroundings: a fresh PostgreSQL database made
and dropped by the run, the gateway's keys cleared from the bench's Redis
database, and users made and funded through the admin API."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from procs import BenchError

# The local PostgreSQL of the measurements; the bench makes a database
# of its own there (and drops it) unless BENCH_DATABASE_URL names one.
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# A database number of its own, so that clearing the gateway's keys touches
# nobody else's (tests use database 0).
REDIS_URL = "redis://127.0.0.1:6379/13"
KEY_PREFIX = "llm-gateway:"


async def _admin(admin_url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def fresh_database(admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """Create an empty database next to ``admin_url``'s; yield its
    SQLAlchemy URL (asyncpg); drop it however the block ends."""
    name = "llm_gateway_bench_" + secrets.token_hex(4)
    try:
        asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise BenchError(f"cannot create a database on {admin_url} ({type(exc).__name__}: {exc}); "
                         "set BENCH_DATABASE_URL to one the bench may use") from exc
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit(("postgresql+asyncpg", parts.netloc, f"/{name}", parts.query, ""))
    finally:
        asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def clear_gateway_keys(redis_url: str) -> int:
    """Delete the gateway's keys (``llm-gateway:*``) from ``redis_url``'s
    database, and nothing else; return how many."""
    import redis

    try:
        with redis.Redis.from_url(redis_url, socket_connect_timeout=2) as client:
            keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i:i + 500])
            return len(keys)
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {redis_url} is unreachable ({type(exc).__name__}: {exc})") from exc


def _post(base: str, master_key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {master_key}", "content-type": "application/json"}
    req = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def funded_user_key(base: str, master_key: str, limits: dict[str, int] | None = None) -> str:
    """A user made through the admin API, funded (so billing stays on the
    hot path) and given an API key; returns the key."""
    user = _post(base, master_key, "/admin/users",
                 {"email": f"bench-{time.time_ns()}-{secrets.token_hex(3)}@example.com", **(limits or {})})
    _post(base, master_key, f"/admin/users/{user['id']}/credits", {"amount_usd": "1000000"})
    return str(_post(base, master_key, f"/admin/users/{user['id']}/keys", {"name": "bench"})["key"])


def funded_user_keys(base: str, master_key: str, count: int, limits: dict[str, int] | None = None) -> list[str]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: funded_user_key(base, master_key, limits), range(count)))
