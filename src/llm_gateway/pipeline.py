"""The request pipeline, readable top to bottom.

    authenticate → limit → cache → reserve funds → route → call →
    stream/return → settle → observe

Each step is a small object with one job; this module is where they are put
in order. The API layer decodes the client's dialect into canonical requests,
calls the pipeline, and encodes what comes back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal

from llm_gateway.auth.principal import Principal
from llm_gateway.billing.pricing import cost_usd
from llm_gateway.errors import UpstreamError
from llm_gateway.providers.base import ChatResult, ChunkOrEvent, EmbeddingResult, RawChat, RawChunk, RawEmbedding
from llm_gateway.routing.router import Route, Router
from llm_gateway.types import ChatRequest, EmbeddingRequest, Usage, UsageDelta


@dataclass(slots=True)
class Call:
    """What one request did: where it went, what it used, what it cost."""

    request_id: str
    model: str
    principal: Principal
    started: float = field(default_factory=time.perf_counter)
    route: Route | None = None
    usage: Usage | None = None
    first_byte_at: float | None = None

    @property
    def deployment(self) -> str | None:
        return self.route.label if self.route else None

    @property
    def cost(self) -> Decimal | None:
        if self.route is None or self.usage is None:
            return None
        return cost_usd(self.route.model.pricing, self.usage)


class Pipeline:
    def __init__(self, router: Router) -> None:
        self.router = router

    def _route(self, model_name: str, call: Call) -> Route:
        model = self.router.resolve(model_name)
        call.principal.check_model(model.name)
        call.route = self.router.choose(model)
        return call.route

    async def chat(self, req: ChatRequest, call: Call) -> ChatResult:
        route = self._route(req.model, call)
        result = await route.provider.chat(req, route.target, call.request_id)
        call.usage = result.usage
        return result

    async def chat_stream(self, req: ChatRequest, call: Call) -> AsyncIterator[ChunkOrEvent]:
        """Open the stream and wait for its first event, so that a failure
        before any byte reaches the client is still a plain HTTP error."""
        route = self._route(req.model, call)
        events = await route.provider.chat_stream(req, route.target, call.request_id)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            raise UpstreamError(f"The {route.provider.name} provider sent an empty stream.") from None
        except BaseException:
            await events.aclose()  # type: ignore[attr-defined]
            raise
        call.first_byte_at = time.perf_counter()
        return self._observed(first, events, call)

    async def _observed(
        self, first: ChunkOrEvent, events: AsyncIterator[ChunkOrEvent], call: Call
    ) -> AsyncIterator[ChunkOrEvent]:
        try:
            event = first
            while True:
                if isinstance(event, UsageDelta) or (isinstance(event, RawChunk) and event.usage is not None):
                    call.usage = event.usage
                yield event
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    return
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def embed(self, req: EmbeddingRequest, call: Call) -> EmbeddingResult:
        route = self._route(req.model, call)
        result = await route.provider.embed(req, route.target, call.request_id)
        call.usage = result.usage
        return result


__all__ = ["Call", "Pipeline", "RawChat", "RawEmbedding"]
