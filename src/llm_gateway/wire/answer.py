"""A provider's answer as one typed value, however it came.

An adapter either translates the upstream's answer into canonical types or,
when the client's own dialect is the upstream's, passes the upstream's bytes
through untouched. Both travel as the same types:

- ``Answer``: a non-streamed chat answer. ``raw`` and ``dialect`` are the
  upstream's own body and its wire format when passed through; ``response``
  is the canonical ``ChatResponse``, decoded from ``raw`` only when someone
  asks (an answer that changes dialect, the cache, a usage estimate).
- ``Piece``: one item of a stream. Passed through, ``raw`` is the payload
  the client gets as is (OpenAI chat: a chunk's JSON, the ``data: `` framing
  added by the route; Anthropic and OpenAI responses: a whole SSE frame), or
  ``None`` when it is for the gateway only (a usage chunk the client did not
  ask for); ``events`` are its canonical events, decoded lazily from ``raw``
  unless the adapter already had them.
- ``EmbeddingAnswer``: embeddings, canonical or OpenAI's own body.

Decoding by dialect is a table, not an if-chain (``_BODY``, ``_EVENTS``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from llm_gateway.errors import UpstreamError
from llm_gateway.types import ChatResponse, Dialect, EmbeddingResponse, StreamEvent, Usage
from llm_gateway.wire.anthropic import from_wire as anthropic_wire
from llm_gateway.wire.openai_chat import from_wire as openai_wire
from llm_gateway.wire.openai_responses import from_wire as responses_wire


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError("The provider answered with a body that is not JSON.") from None


_BODY: dict[Dialect, Callable[[bytes], ChatResponse]] = {
    "openai.chat": lambda body: openai_wire.chat_response(_json(body)),
    "openai.responses": lambda body: responses_wire.chat_response(_json(body)),
    "anthropic.messages": lambda body: anthropic_wire.chat_response(_json(body), created=int(time.time())),
}
_EVENTS: dict[Dialect, Callable[[bytes], list[StreamEvent]]] = {
    "openai.chat": lambda data: openai_wire.chunk_events(orjson.loads(data)),
    "openai.responses": responses_wire.frame_events,
}


@dataclass(slots=True)
class Answer:
    """A non-streamed chat answer (see the module's docstring)."""

    usage: Usage | None
    raw: bytes | None = None
    dialect: Dialect | None = None
    _response: ChatResponse | None = field(default=None, repr=False)

    @classmethod
    def of(cls, response: ChatResponse) -> Answer:
        """A canonical answer."""
        return cls(response.usage, _response=response)

    @classmethod
    def passed(cls, raw: bytes, dialect: Dialect, usage: Usage | None) -> Answer:
        """The upstream's own body, in ``dialect``."""
        return cls(usage, raw, dialect)

    @property
    def response(self) -> ChatResponse:
        """The canonical answer (decoded once, on first use)."""
        if self._response is None:
            assert self.raw is not None and self.dialect is not None
            self._response = _BODY[self.dialect](self.raw)
        return self._response

    def body_in(self, dialect: Dialect) -> bytes | None:
        """The upstream's own bytes, when they are in ``dialect``."""
        return self.raw if self.dialect == dialect else None


class Piece:
    """One item of a stream (see the module's docstring)."""

    __slots__ = ("_events", "dialect", "raw", "usage")

    def __init__(
        self, raw: bytes | None = None, dialect: Dialect | None = None, usage: Usage | None = None,
        events: list[StreamEvent] | None = None,
    ) -> None:
        self.raw = raw
        self.dialect = dialect
        self.usage = usage
        self._events = events

    @classmethod
    def of(cls, event: StreamEvent) -> Piece:
        """One canonical event."""
        return cls(events=[event])

    @property
    def decoded(self) -> bool:
        """Whether the canonical events are at hand without decoding ``raw``."""
        return self._events is not None or self.raw is None

    @property
    def events(self) -> list[StreamEvent]:
        if self._events is None:
            self._events = [] if self.raw is None or self.dialect is None else _EVENTS[self.dialect](self.raw)
        return self._events

    def raw_in(self, dialect: Dialect) -> bytes | None:
        """The upstream's own bytes, when they are in ``dialect``."""
        return self.raw if self.dialect == dialect else None

    def __repr__(self) -> str:
        return f"Piece(raw={self.raw!r}, dialect={self.dialect!r}, events={self._events!r})"


@dataclass(slots=True)
class EmbeddingAnswer:
    """Embeddings: canonical (``response``), or OpenAI's own body (``raw``)."""

    usage: Usage | None
    raw: bytes | None = None
    response: EmbeddingResponse | None = None

    @classmethod
    def of(cls, response: EmbeddingResponse) -> EmbeddingAnswer:
        return cls(response.usage, response=response)
