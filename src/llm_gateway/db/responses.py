"""Stored ``/v1/responses`` answers: per user, for ``responses.store_ttl_s``.

A row holds the ``response`` object the client got and every input item the
model saw, so continuing a conversation (``previous_response_id``) reads one
row whatever its length, and an expired earlier turn never breaks a later
one. A user reaches only their own rows (anyone else's id is not found); the
master key's responses belong to no user and are its own.

Storage is bounded: rows expire after the TTL and are deleted — an expired
row is never read, and each process deletes expired rows at most once a
minute, when it stores a response; a conversation is at most
``responses.max_stored_bytes``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import delete, select

from llm_gateway.db.engine import Database
from llm_gateway.db.models import StoredResponse
from llm_gateway.db.types import utcnow
from llm_gateway.settings import ResponsesSettings

SWEEP_EVERY_S = 60.0


@dataclass(slots=True)
class Stored:
    """A stored response, as read back."""

    id: str
    model: str
    input_items: list[dict[str, Any]]
    response: bytes


def _owner(user_id: str | None) -> Any:
    return StoredResponse.user_id.is_(None) if user_id is None else StoredResponse.user_id == user_id


class ResponseStore:
    def __init__(self, db: Database, settings: ResponsesSettings) -> None:
        self.db = db
        self.settings = settings
        self._swept_at = 0.0

    async def save(self, response_id: str, user_id: str | None, model: str, items: list[dict[str, Any]],
                   response: bytes) -> None:
        """Keep a response (replacing a row of the same id and owner)."""
        now = utcnow()
        row = StoredResponse(id=response_id, user_id=user_id, model=model[:200],
                             input_items=orjson.dumps(items).decode(), response=response.decode(), created_at=now,
                             expires_at=now + timedelta(seconds=self.settings.store_ttl_s))
        async with self.db.session() as session:
            await session.execute(delete(StoredResponse).where(StoredResponse.id == response_id, _owner(user_id)))
            session.add(row)
            await session.commit()
        if time.monotonic() - self._swept_at >= SWEEP_EVERY_S:
            self._swept_at = time.monotonic()
            await self.sweep()

    async def get(self, response_id: str, user_id: str | None) -> Stored | None:
        """The caller's unexpired response of that id, else ``None``."""
        async with self.db.session() as session:
            row = (await session.execute(select(StoredResponse).where(
                StoredResponse.id == response_id, _owner(user_id), StoredResponse.expires_at > utcnow()))).scalar()
        if row is None:
            return None
        return Stored(row.id, row.model, orjson.loads(row.input_items), row.response.encode())

    async def delete(self, response_id: str, user_id: str | None) -> bool:
        async with self.db.session() as session:
            result = await session.execute(delete(StoredResponse).where(
                StoredResponse.id == response_id, _owner(user_id), StoredResponse.expires_at > utcnow()))
            await session.commit()
        return bool(getattr(result, "rowcount", 0))

    async def sweep(self) -> int:
        """Delete every expired response; how many were."""
        async with self.db.session() as session:
            result = await session.execute(delete(StoredResponse).where(StoredResponse.expires_at <= utcnow()))
            await session.commit()
        return int(getattr(result, "rowcount", 0) or 0)
