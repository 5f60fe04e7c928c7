"""The adapter for ``anthropic`` providers: ``POST {api_base}/messages``.

Only I/O lives here; translation is in ``to_wire``, ``from_wire`` and
``stream``. Error answers are mapped once, by ``error_from_response``.

Passthrough: a request that arrived in Anthropic's own dialect
(``req.origin``) is sent as the client wrote it, with only ``model``
replaced (and ``max_tokens`` added when absent), so everything Anthropic
understands — thinking, prompt-caching marks, documents, ``top_k`` — reaches
it; the answer's bytes go back unchanged (``Answer``, ``Piece``),
read only for usage and, for the cache, its canonical events.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import aiohttp

from llm_gateway.errors import InvalidRequest
from llm_gateway.providers.base import Target
from llm_gateway.providers.http import (
    SSEEvent,
    Upstream,
    finish,
    iter_sse,
    load_json,
    transport_errors,
    unexpected_body,
)
from llm_gateway.settings import ProviderSettings
from llm_gateway.types import ChatRequest, EmbeddingRequest, EmbeddingResponse, StreamEvent
from llm_gateway.wire.answer import Answer, Piece
from llm_gateway.wire.anthropic import from_wire, to_wire
from llm_gateway.wire.anthropic.stream import StreamDecoder

API_VERSION = "2023-06-01"
# What ``/messages/count_tokens`` takes of a Messages body (besides ``model``).
_COUNTED = frozenset({
    "messages", "system", "tools", "tool_choice", "thinking", "output_config", "cache_control", "speed",
    "context_management",
})


class AnthropicProvider:
    """Speaks Anthropic's Messages API; answers in canonical types."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.name = settings.name
        self.kind = settings.kind
        self._url = f"{settings.base_url}/messages"
        self._count_url = f"{settings.base_url}/messages/count_tokens"
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
        if settings.api_key:
            headers["x-api-key"] = settings.api_key
        self._http = Upstream(settings, headers | settings.headers)  # e.g. anthropic-beta
        self.address = self._http.address
        # The configured anthropic-beta header, if any, under its configured spelling.
        configured = [(k, v) for k, v in settings.headers.items() if k.lower() == "anthropic-beta"]
        self._beta_key, self._beta = configured[0] if configured else ("anthropic-beta", "")

    async def start(self) -> None:
        await self._http.start()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def chat(self, req: ChatRequest, target: Target, request_id: str) -> Answer:
        if req.from_dialect("anthropic.messages") is not None:
            raw = await self._http.call(self._url, _passthrough(req, target), request_id, target.timeouts,
                                        self._betas(req))
            reported = _message(load_json(raw, self.name), self.name).get("usage")
            return Answer.passed(raw, "anthropic.messages",
                                 from_wire.usage(reported) if isinstance(reported, dict) else None)
        wire = to_wire.messages_body(req, target.model, target.max_output_tokens)
        data = load_json(await self._http.call(self._url, wire.body, request_id, target.timeouts), self.name)
        return Answer.of(from_wire.chat_response(_message(data, self.name), created=int(time.time()),
                                                 json_tool=wire.json_tool))

    async def chat_stream(self, req: ChatRequest, target: Target, request_id: str) -> AsyncIterator[Piece]:
        if req.from_dialect("anthropic.messages") is not None:
            resp = await self._http.open_stream(self._url, _passthrough(req, target), request_id, target.timeouts,
                                                self._betas(req))
            return self._frames(resp, StreamDecoder(self.name))
        wire = to_wire.messages_body(req, target.model, target.max_output_tokens)
        resp = await self._http.open_stream(self._url, wire.body, request_id, target.timeouts)
        return self._events(resp, StreamDecoder(self.name, wire.json_tool))

    def _betas(self, req: ChatRequest) -> dict[str, str] | None:
        """The client's ``anthropic-beta`` features, joined to the provider's configured ones."""
        beta = req.origin.headers.get("anthropic-beta") if req.from_dialect("anthropic.messages") is not None \
            and req.origin is not None else None
        if not beta:
            return None
        return {self._beta_key: f"{self._beta},{beta}" if self._beta else beta}

    async def _decoded(
        self, resp: aiohttp.ClientResponse, decoder: StreamDecoder
    ) -> AsyncGenerator[tuple[SSEEvent, list[StreamEvent]], None]:
        """Each upstream event with its canonical events, until ``message_stop``;
        an ``error`` event, or a body that ends early, raises."""
        try:
            with transport_errors(self.name):
                async for event in iter_sse(resp.content):
                    yield event, decoder.feed(load_json(event.data, self.name))
                    if decoder.done:
                        break
            decoder.close()
        finally:
            finish(resp, decoder.done)

    # (``aclosing``: closing the outer stream, as a client hanging up does,
    # closes the upstream response at once, not when the inner one is collected.)
    async def _events(self, resp: aiohttp.ClientResponse, decoder: StreamDecoder) -> AsyncIterator[Piece]:
        async with aclosing(self._decoded(resp, decoder)) as decoded:
            async for _, events in decoded:
                for ev in events:
                    yield Piece.of(ev)

    async def _frames(self, resp: aiohttp.ClientResponse, decoder: StreamDecoder) -> AsyncIterator[Piece]:
        """The upstream's events as they came, each with its canonical events
        (the client gets the gateway's own error event, not Anthropic's)."""
        async with aclosing(self._decoded(resp, decoder)) as decoded:
            async for event, events in decoded:
                name = (event.event or "message").encode()
                yield Piece(b"event: " + name + b"\ndata: " + event.data + b"\n\n", "anthropic.messages",
                            events=events)

    async def count_tokens(self, req: ChatRequest, target: Target, request_id: str) -> int:
        """Anthropic's own count of the request's input tokens
        (``POST {api_base}/messages/count_tokens``)."""
        own = req.from_dialect("anthropic.messages")
        if own is not None:
            body = {k: v for k, v in own.items() if k in _COUNTED}
        else:
            body = {k: v for k, v in to_wire.messages_body(req, target.model, 1).body.items() if k in _COUNTED}
        body["model"] = target.model
        raw = await self._http.call(self._count_url, body, request_id, target.timeouts, self._betas(req))
        data = load_json(raw, self.name)
        count = data.get("input_tokens") if isinstance(data, dict) else None
        if not isinstance(count, int) or isinstance(count, bool):
            raise unexpected_body(self.name)
        return count

    async def embed(self, req: EmbeddingRequest, target: Target, request_id: str) -> EmbeddingResponse:
        raise InvalidRequest(
            f"Model {req.model!r} is served by Anthropic, which has no embeddings API.",
            code="unsupported_endpoint", param="model",
        )


def _passthrough(req: ChatRequest, target: Target) -> dict[str, Any]:
    body = dict(req.from_dialect("anthropic.messages") or {})
    body["model"] = target.model
    body.setdefault("max_tokens", target.max_output_tokens)
    return body


def _message(data: Any, provider: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise unexpected_body(provider)
    return data
