"""The request pipeline, readable top to bottom.

    authenticate → limit → cache → reserve funds → route → call →
    stream/return → settle → observe

Authentication happens in the API layer (it knows the credential's
transport); this module puts the rest in order. Money: before the provider
is called the most the request can cost is reserved (402 when it does not
fit); afterwards the real cost is charged and the rest released — also when
the call failed (nothing charged) or the client cut a stream (what was
produced is charged). Settlement runs in its own task, so a client that
disconnects cannot interrupt it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal

import orjson

from llm_gateway.auth.principal import Principal
from llm_gateway.billing.ledger import Hold, Ledger
from llm_gateway.billing.pricing import cost_usd, max_cost_usd
from llm_gateway.billing.usage import UsageEvent, UsageWriter
from llm_gateway.errors import GatewayError, UpstreamError
from llm_gateway.providers.base import ChatResult, ChunkOrEvent, EmbeddingResult, RawChat, RawChunk, RawEmbedding
from llm_gateway.routing.router import Route, Router
from llm_gateway.settings import ModelSettings
from llm_gateway.tokens import embedding_upper_bound, estimate_prompt, estimate_text, prompt_upper_bound
from llm_gateway.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)

log = logging.getLogger("llm_gateway.billing")


@dataclass(slots=True)
class Call:
    """What one request did: where it went, what it used, what it cost."""

    request_id: str
    model: str
    principal: Principal
    endpoint: str = "chat"
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    route: Route | None = None
    usage: Usage | None = None
    usage_estimated: bool = False
    first_byte_at: float | None = None
    hold: Hold | None = None
    charged: Decimal | None = None
    status: int = 200

    @property
    def deployment(self) -> str | None:
        return self.route.label if self.route else None

    @property
    def cost(self) -> Decimal | None:
        if self.route is None or self.usage is None:
            return None
        return cost_usd(self.route.model.pricing, self.usage)


def _estimated_usage(req: ChatRequest, result: ChatResult) -> Usage:
    """For an upstream that reported no usage: the prompt estimate and the
    answer's text, at ~4 characters a token."""
    if isinstance(result, ChatResponse):
        texts = [c.text or "" for c in result.choices] + [
            t.arguments for c in result.choices for t in c.tool_calls]
    else:
        try:
            data = orjson.loads(result.body)
            texts = [str((c.get("message") or {}).get("content") or "") for c in data.get("choices", [])]
        except (orjson.JSONDecodeError, AttributeError):
            texts = []
    return Usage(estimate_prompt(req), sum(estimate_text(t) for t in texts))


class Pipeline:
    def __init__(self, router: Router, ledger: Ledger, usage: UsageWriter) -> None:
        self.router = router
        self.ledger = ledger
        self.usage = usage
        self._background: set[asyncio.Task[None]] = set()

    def _resolve(self, model_name: str, call: Call) -> ModelSettings:
        model = self.router.resolve(model_name)
        call.principal.check_model(model.name)
        return model

    # ----------------------------------------------------- provider calls
    # Route choice and the call itself; ``call.route`` is the deployment
    # that served (or last failed).

    async def _call_chat(self, req: ChatRequest, model: ModelSettings, call: Call) -> ChatResult:
        route = call.route = self.router.choose(model)
        return await route.provider.chat(req, route.target, call.request_id)

    async def _open_stream(
        self, req: ChatRequest, model: ModelSettings, call: Call
    ) -> tuple[ChunkOrEvent, AsyncIterator[ChunkOrEvent]]:
        """Open the stream and wait for its first event."""
        route = call.route = self.router.choose(model)
        events = await route.provider.chat_stream(req, route.target, call.request_id)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            await events.aclose()  # type: ignore[attr-defined]
            raise UpstreamError(f"The {route.provider.name} provider sent an empty stream.") from None
        except BaseException:
            await events.aclose()  # type: ignore[attr-defined]
            raise
        return first, events

    async def _call_embed(self, req: EmbeddingRequest, model: ModelSettings, call: Call) -> EmbeddingResult:
        route = call.route = self.router.choose(model)
        return await route.provider.embed(req, route.target, call.request_id)

    # -------------------------------------------------------------- money

    async def _reserve(self, call: Call, model: ModelSettings, prompt_tokens: int, output_tokens: int) -> None:
        principal = call.principal
        if principal.user_id is None:
            return  # the master key is charged to nobody
        amount = max_cost_usd(model.pricing, prompt_tokens, output_tokens)
        if amount <= 0 and principal.budget_usd is None:
            return  # a model priced at zero needs no balance
        call.hold = await self.ledger.reserve(
            principal.user_id, amount, key_id=principal.key_id,
            budget_usd=principal.budget_usd, budget_kind=principal.budget_period,
        )

    async def _settle(self, call: Call) -> None:
        hold, call.hold = call.hold, None
        if hold is None:
            return
        cost = call.cost or Decimal(0)
        for attempt in range(5):
            try:
                call.charged = await self.ledger.settle(hold, cost, call.request_id)
                return
            except Exception as exc:
                log.warning("settling %s failed (%s), attempt %d", call.request_id, type(exc).__name__, attempt + 1)
                await asyncio.sleep(0.2 * 2**attempt)
        log.error("could not settle %s: its reservation expires and is released", call.request_id)

    async def _settle_detached(self, call: Call) -> None:
        """Settle in a task of its own: a cancelled request cannot stop it."""
        task = asyncio.get_running_loop().create_task(self._settle(call))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        await asyncio.shield(task)

    def finish(self, call: Call, status: int) -> None:
        """Record the request's usage (batched, off the hot path)."""
        usage = call.usage or Usage()
        now = time.perf_counter()
        principal = call.principal
        self.usage.record(UsageEvent(
            # The model name is the client's and not yet validated: bound it to its column.
            request_id=call.request_id, model=call.model[:200].replace("\x00", ""), endpoint=call.endpoint,
            status=status,
            user_id=principal.user_id, key_id=principal.key_id, deployment=call.deployment, stream=call.stream,
            cache="BYPASS", input_tokens=usage.input_tokens, cached_input_tokens=usage.cached_input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=call.charged if call.charged is not None else (call.cost or Decimal(0)),
            latency_ms=(now - call.started) * 1000,
            ttft_ms=(call.first_byte_at - call.started) * 1000 if call.first_byte_at else None,
        ))

    async def drain(self) -> None:
        """Wait for settlements in flight (graceful shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # --------------------------------------------------------------- chat

    async def chat(self, req: ChatRequest, call: Call) -> ChatResult:
        model = self._resolve(req.model, call)
        await self._reserve(call, model, prompt_upper_bound(req), (req.max_tokens or model.max_output_tokens)
                            * (req.n or 1))
        try:
            result = await self._call_chat(req, model, call)
        except BaseException:
            await self._settle_detached(call)  # nothing produced: release, charge nothing
            raise
        call.usage = result.usage
        if call.usage is None:
            call.usage, call.usage_estimated = _estimated_usage(req, result), True
        await self._settle_detached(call)
        return result

    async def chat_stream(self, req: ChatRequest, call: Call) -> AsyncIterator[ChunkOrEvent]:
        """Open the stream and wait for its first event, so that a failure
        before any byte reaches the client is still a plain HTTP error."""
        call.stream = True
        model = self._resolve(req.model, call)
        await self._reserve(call, model, prompt_upper_bound(req), (req.max_tokens or model.max_output_tokens)
                            * (req.n or 1))
        try:
            first, events = await self._open_stream(req, model, call)
        except BaseException:
            await self._settle_detached(call)
            raise
        call.first_byte_at = time.perf_counter()
        return self._observed(first, events, call, req)

    async def _observed(
        self, first: ChunkOrEvent, events: AsyncIterator[ChunkOrEvent], call: Call, req: ChatRequest
    ) -> AsyncIterator[ChunkOrEvent]:
        produced = 0  # output tokens seen, in case the stream ends without usage
        try:
            event = first
            while True:
                if isinstance(event, UsageDelta):
                    call.usage = event.usage
                elif isinstance(event, RawChunk):
                    if event.usage is not None:
                        call.usage = event.usage
                    elif event.data is not None:
                        produced += 1  # OpenAI-format streams send about one token a chunk
                elif isinstance(event, TextDelta):
                    produced += estimate_text(event.text)
                elif isinstance(event, ToolCallDelta):
                    produced += estimate_text(event.arguments) + (1 if event.name else 0)
                yield event
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    return
        except GatewayError as exc:
            call.status = exc.status_code
            raise
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            if call.usage is None and produced:
                call.usage, call.usage_estimated = Usage(estimate_prompt(req), produced), True
            await self._settle_detached(call)
            self.finish(call, call.status)

    # --------------------------------------------------------- embeddings

    async def embed(self, req: EmbeddingRequest, call: Call) -> EmbeddingResult:
        call.endpoint = "embeddings"
        model = self._resolve(req.model, call)
        await self._reserve(call, model, embedding_upper_bound(req.inputs), 0)
        try:
            result = await self._call_embed(req, model, call)
        except BaseException:
            await self._settle_detached(call)
            raise
        call.usage = result.usage or Usage(
            sum(estimate_text(i) if isinstance(i, str) else len(i) for i in req.inputs))
        await self._settle_detached(call)
        return result


__all__ = ["Call", "Pipeline", "RawChat", "RawEmbedding"]
