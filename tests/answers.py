"""Adapters answer in ``wire.answer`` types; unit tests of canonical
answers read them through these helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from llm_gateway.types import StreamEvent
from llm_gateway.wire.answer import Answer, EmbeddingAnswer, Piece


def unwrap(value: Any) -> Any:
    """A canonical answer's canonical value; a passed-through one as it is."""
    if isinstance(value, Answer) and value.raw is None:
        return value.response
    if isinstance(value, EmbeddingAnswer) and value.response is not None:
        return value.response
    return value


def events_of(pieces: list[Piece]) -> list[StreamEvent]:
    return [e for p in pieces for e in p.events]


async def collect_events(stream: AsyncIterator[Piece]) -> list[StreamEvent]:
    return events_of([p async for p in stream])
