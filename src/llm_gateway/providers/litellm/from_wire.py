"""LiteLLM's answers → canonical responses and stream events (pure).

LiteLLM answers with OpenAI-shaped pydantic objects (``ModelResponse``,
``ModelResponseStream``, ``EmbeddingResponse``) whatever the provider, so
their plain form is read by the OpenAI translators; usage, as LiteLLM
reports it, is what the request is billed for.
"""

from __future__ import annotations

from typing import Any

from llm_gateway.types import ChatResponse, EmbeddingResponse, FinishDelta, StreamEvent
from llm_gateway.wire.openai_chat import from_wire as openai_wire


def plain(obj: Any) -> Any:
    """A LiteLLM object's plain (JSON-like) form; plain data as it is."""
    dump = getattr(obj, "model_dump", None)
    return dump() if callable(dump) else obj


def chat_response(obj: Any) -> ChatResponse:
    return openai_wire.chat_response(plain(obj))


def chunk_events(obj: Any) -> list[StreamEvent]:
    return openai_wire.chunk_events(plain(obj))


def finishes(events: list[StreamEvent]) -> bool:
    return any(isinstance(e, FinishDelta) for e in events)


def embedding_response(obj: Any) -> EmbeddingResponse:
    return openai_wire.embedding_response(plain(obj))
