"""Secrets the gateway makes for itself: the master key when none is
configured (printed once, stored only as a hash) and the JWT signing secret
when ``auth.jwt_secret`` is empty. Both live in the database, so every worker
and instance shares them.

The master key's lifecycle:

- a ``master_key`` in the config (or ``GATEWAY_MASTER_KEY``) always wins; a
  stored one is then ignored, and used again if the setting is removed;
- otherwise the first start generates one and stores its hash (with its
  display prefix); later starts keep it;
- ``llm-gateway master-key rotate`` replaces the stored hash. Gateways check
  the stored master key like an API key (cached, evicted through the
  invalidation bus), so the old key stops working on every process within
  the credential cache's life.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from llm_gateway.auth.credentials import display_prefix, generate_key, hash_secret
from llm_gateway.db import system
from llm_gateway.db.engine import Database
from llm_gateway.db.models import SystemValue
from llm_gateway.db.types import utcnow
from llm_gateway.settings import Settings

MASTER_HASH = "master_key_hash"
MASTER_PREFIX = "master_key_prefix"


async def ensure_master_key(db: Database, settings: Settings) -> None:
    """First start without a configured master key: generate one, store its
    hash, print it once. Later starts (and other workers) find it stored."""
    if settings.master_key:
        return
    candidate = generate_key()
    async with db.session() as session:
        _, created = await system.get_or_create(session, MASTER_HASH, lambda: hash_secret(candidate))
        if created:
            await system.get_or_create(session, MASTER_PREFIX, lambda: display_prefix(candidate))
    if created:
        print(
            "\n  LLM Gateway created a master key. It is shown only this once and stored hashed:\n\n"
            f"    {candidate}\n\n  Use it as 'Authorization: Bearer <master key>' (admin API and /v1).\n"
            "  Lost it? Run `llm-gateway master-key rotate` where the database is reachable.\n",
            file=sys.stdout, flush=True,
        )


async def is_stored_master_key(session: AsyncSession, digest: str) -> bool:
    """Whether ``digest`` is the hash of the stored (generated) master key."""
    stored = await system.get_value(session, MASTER_HASH)
    return stored is not None and secrets.compare_digest(stored, digest)


@dataclass(frozen=True, slots=True)
class StoredMasterKey:
    """What the database knows about a generated master key (never the key)."""

    prefix: str | None  # None for keys generated before prefixes were kept
    created_at: datetime


async def stored_master_key(session: AsyncSession) -> StoredMasterKey | None:
    row = await session.get(SystemValue, MASTER_HASH)
    if row is None:
        return None
    return StoredMasterKey(await system.get_value(session, MASTER_PREFIX), row.created_at)


async def rotate_master_key(session: AsyncSession) -> tuple[str, str | None]:
    """Replace the stored master key with a new one, in one transaction.
    Returns ``(new plaintext key, hash of the key it replaced or None)``."""
    plaintext = generate_key()
    now = utcnow()
    old: str | None = None
    for name, value in ((MASTER_HASH, hash_secret(plaintext)), (MASTER_PREFIX, display_prefix(plaintext))):
        row = await session.get(SystemValue, name, with_for_update=True)
        if row is None:
            session.add(SystemValue(name=name, value=value, created_at=now))
        else:
            if name == MASTER_HASH:
                old = row.value
            row.value, row.created_at = value, now
    await session.commit()
    return plaintext, old


async def jwt_secret(db: Database, settings: Settings) -> str:
    if settings.auth.jwt_secret:
        return settings.auth.jwt_secret
    async with db.session() as session:
        value, _ = await system.get_or_create(session, "jwt_secret", lambda: secrets.token_urlsafe(48))
    return value
