"""The response cache: keys, entries, and where they are kept."""

from llm_gateway.cache.entries import Entry, StreamAssembler, replay_chunks
from llm_gateway.cache.keys import cache_key
from llm_gateway.cache.store import ResponseCache

__all__ = ["Entry", "ResponseCache", "StreamAssembler", "cache_key", "replay_chunks"]
