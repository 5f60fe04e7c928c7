"""Any provider's answer in canonical form, whether an adapter returned
canonical objects or passed the upstream's own bytes through (``RawChat`` /
``RawChunk`` in OpenAI's format, ``RawMessage`` / ``RawEvent`` in
Anthropic's). Used where an answer must change dialect: an OpenAI answer for
a ``/v1/messages`` client, an Anthropic one kept by the cache as OpenAI's."""

from __future__ import annotations

import time

import orjson

from llm_gateway.providers.anthropic import from_wire as anthropic_wire
from llm_gateway.providers.base import ChatResult, ChunkOrEvent, RawChat, RawChunk, RawEvent
from llm_gateway.providers.http import load_json
from llm_gateway.providers.openai import from_wire as openai_wire
from llm_gateway.types import ChatResponse, StreamEvent


def canonical_chat(result: ChatResult) -> ChatResponse:
    if isinstance(result, ChatResponse):
        return result
    if isinstance(result, RawChat):
        return openai_wire.chat_response(load_json(result.body, "upstream"))
    return anthropic_wire.chat_response(load_json(result.body, "upstream"), created=int(time.time()))


def canonical_events(item: ChunkOrEvent) -> list[StreamEvent]:
    if isinstance(item, RawChunk):
        return openai_wire.chunk_events(orjson.loads(item.data)) if item.data is not None else []
    if isinstance(item, RawEvent):
        return item.events
    return [item]
