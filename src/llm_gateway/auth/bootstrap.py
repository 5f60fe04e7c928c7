"""Secrets the gateway makes for itself on first start (SPEC §1): the master
key when none is configured (printed once, stored only as a hash) and the JWT
signing secret when ``auth.jwt_secret`` is empty. Both live in the database,
so every worker and instance shares them."""

from __future__ import annotations

import secrets
import sys

from llm_gateway.auth.credentials import generate_key, hash_secret
from llm_gateway.db import system
from llm_gateway.db.engine import Database
from llm_gateway.settings import Settings


async def master_key_hash(db: Database, settings: Settings) -> str:
    if settings.master_key:
        return hash_secret(settings.master_key)
    candidate = generate_key()
    async with db.session() as session:
        stored, created = await system.get_or_create(session, "master_key_hash", lambda: hash_secret(candidate))
    if created:
        print(
            "\n  LLM Gateway created a master key. It is shown only this once and stored hashed:\n\n"
            f"    {candidate}\n\n  Use it as 'Authorization: Bearer <master key>' (admin API and /v1).\n",
            file=sys.stdout, flush=True,
        )
    return stored


async def jwt_secret(db: Database, settings: Settings) -> str:
    if settings.auth.jwt_secret:
        return settings.auth.jwt_secret
    async with db.session() as session:
        value, _ = await system.get_or_create(session, "jwt_secret", lambda: secrets.token_urlsafe(48))
    return value
