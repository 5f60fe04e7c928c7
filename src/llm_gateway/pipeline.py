"""The request pipeline, readable top to bottom.

    authenticate → limit → cache → reserve funds → route → call →
    stream/return → settle → observe

Limits: every rate limit that applies is taken at once, before the cache
answers or the provider is called (429 when one refuses; for a user's
request ``_gate`` sends it beside the cache lookup or the reservation); the
tokens admitted from the estimate are corrected from the real usage when
the request ends. Cache: a hit is
answered without reserving or calling anything (and costs nothing unless
``cache.charge_hits``); a streamed request replays a stored answer as
chunks; an answer is stored only once it is complete.

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
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import orjson

from llm_gateway.auth.principal import Principal
from llm_gateway.billing.ledger import MAX_BALANCE_USD, Hold, Ledger
from llm_gateway.billing.pricing import cost_usd, format_usd, max_cost_usd
from llm_gateway.billing.usage import UsageEvent, UsageWriter
from llm_gateway.cache import Entry, ResponseCache, StreamAssembler, cache_key, replay_chunks
from llm_gateway.errors import GatewayError, InvalidRequest, UpstreamError
from llm_gateway.limits import Admission, Limiter
from llm_gateway.observability.observer import Observer
from llm_gateway.providers.base import passes_through
from llm_gateway.routing.router import Route, Router
from llm_gateway.settings import ModelSettings
from llm_gateway.tokens import embedding_upper_bound, estimate_prompt, estimate_text, prompt_upper_bound
from llm_gateway.types import (
    ChatRequest,
    EmbeddingRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from llm_gateway.wire.answer import Answer, EmbeddingAnswer, Piece
from llm_gateway.wire.openai_chat.encode import encode_chat_response, encode_embedding_response

log = logging.getLogger("llm_gateway.billing")
T = TypeVar("T")
_MAX_REFUSED = 10_000  # callers remembered as refused by a limit (forgotten all at once past it)


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
    attempts: int = 0  # provider calls made (retries and fallbacks included)
    model_settings: ModelSettings | None = None
    admission: Admission | None = None
    # use | refresh (Cache-Control: no-cache: do not read, do store) | off
    cache_mode: str = "use"
    cache: str = "BYPASS"  # HIT | MISS | BYPASS, as in x-gateway-cache
    cache_key: str | None = None
    cached_deployment: str | None = None
    upstream_started: float | None = None  # when the first provider attempt began
    timeout_s: float | None = None  # the client's x-gateway-timeout, if it sent one

    @property
    def deployment(self) -> str | None:
        return self.route.label if self.route else self.cached_deployment

    @property
    def limited_scope(self) -> str | None:
        """The limit that refused this request (key, user, model, global)."""
        return self.admission.refused_scope if self.admission else None

    @property
    def cost(self) -> Decimal | None:
        model = self.route.model if self.route else self.model_settings
        if model is None or self.usage is None:
            return None
        return cost_usd(model.pricing, self.usage)


def _caller(call: Call) -> str:
    return call.principal.key_id or call.principal.user_id or ""


def _admission_tokens(req: ChatRequest) -> int:
    """What a request is admitted for against token limits: the prompt's
    estimate plus the answer it may ask for; the real usage corrects it."""
    return estimate_prompt(req) + (req.max_tokens or 0) * (req.n or 1)


def _estimated_usage(req: ChatRequest, result: Answer) -> Usage:
    """For an upstream that reported no usage: the prompt estimate and the
    answer's text, at ~4 characters a token."""
    try:
        choices = result.response.choices
        texts = [c.text or "" for c in choices] + [t.arguments for c in choices for t in c.tool_calls]
    except GatewayError:
        texts = []
    return Usage(estimate_prompt(req), sum(estimate_text(t) for t in texts))


# Who alone takes what a dialect's request may hold beyond the canonical form.
_ONLY_FOR = {"anthropic.messages": "Only Anthropic deployments take it",
             "openai.responses": "Only OpenAI deployments (kind openai) take it",
             "openai.chat": "Only OpenAI-format deployments take it"}


def _check_translatable(req: ChatRequest, route: Route) -> None:
    """A request holding what only its own dialect's providers take (an
    Anthropic document, an OpenAI built-in tool) goes to no other provider."""
    origin = req.origin
    if origin is not None and origin.only is not None and not passes_through(route.provider.kind, req):
        param, message = origin.only
        raise InvalidRequest(f"{message} {_ONLY_FOR[origin.dialect]}, and '{route.model.name}' is served "
                             f"by a {route.provider.kind} one.", code="unsupported_value", param=param)


def _check_max_tokens(req: ChatRequest, model: ModelSettings) -> None:
    """A request may ask for at most what the model can write: the
    reservation and the token limits are sized from it."""
    if req.max_tokens is not None and req.max_tokens > model.max_output_tokens:
        body = req.origin.body if req.origin is not None else {}
        param = "max_output_tokens" if req.from_dialect("openai.responses") is not None else (
            "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens")
        raise InvalidRequest(
            f"{param} is too large: {req.max_tokens}. The model '{model.name}' writes at most "
            f"{model.max_output_tokens} tokens.", code="invalid_value", param=param)


class Pipeline:
    def __init__(
        self, router: Router, ledger: Ledger, usage: UsageWriter, limiter: Limiter, cache: ResponseCache
    ) -> None:
        self.router = router
        self.ledger = ledger
        self.usage = usage
        self.limiter = limiter
        self.cache = cache
        self._background: set[asyncio.Task[None]] = set()
        self._refused: dict[str, float] = {}  # caller -> until when a limit refuses it (monotonic)

    def _resolve(self, model_name: str, call: Call) -> ModelSettings:
        model = self.router.resolve(model_name)
        call.principal.check_model(model.name)
        call.model_settings = model
        return model

    # ------------------------------------------------- limits and cache

    async def _gate(
        self, call: Call, model: ModelSettings, tokens: int, lookup: tuple[str, dict[str, Any] | None],
        prompt_tokens: int, output_tokens: int,
    ) -> Entry | None:
        """Limits, then the cache, then the reservation; the stored answer
        on a hit (nothing reserved). For a user's request their round trips
        overlap: the limits go with the cache lookup (both Redis), or, when
        the cache has nothing to look up, with the reservation (the
        database). A refusal answers as in order (a limit's 429 first, a
        hold taken meanwhile released); a caller refused by a limit stays in
        order until its retry time, so that a flood it sends is stopped at
        the limits and never reaches the cache or the database."""
        if call.principal.user_id is None or self._refused.get(_caller(call), 0.0) > time.monotonic():
            await self._admit(call, model, tokens)
            entry = await self._lookup(call, *lookup)
            if entry is None:
                await self._reserve(call, model, prompt_tokens, output_tokens)
            return entry
        loop = asyncio.get_running_loop()
        if lookup[1] is not None and self._cache_on(call):
            looking = loop.create_task(self._lookup(call, *lookup))
            try:
                await self._admit(call, model, tokens)
            except BaseException:
                looking.cancel()
                with contextlib.suppress(BaseException):
                    await looking
                call.cache, call.cache_key = "BYPASS", None  # refused: never looked up, never stored
                raise
            entry = await looking
            if entry is None:
                await self._reserve(call, model, prompt_tokens, output_tokens)
            return entry
        admitting = loop.create_task(self._admit(call, model, tokens))
        try:
            await self._reserve(call, model, prompt_tokens, output_tokens)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                admitting.cancel()
            else:
                await admitting  # a limit's 429 comes before the reservation's refusal
            raise
        try:
            await admitting
        except BaseException:
            await self._settle_detached(call)  # refused (or cancelled) before any call: release the hold
            raise
        return None

    async def _admit(self, call: Call, model: ModelSettings, tokens: int) -> None:
        call.admission = await self.limiter.admit(call.principal, model, tokens)
        if call.admission is not None and not call.admission.allowed:
            if len(self._refused) >= _MAX_REFUSED:
                self._refused.clear()
            self._refused[_caller(call)] = time.monotonic() + call.admission.retry_after_s
            raise call.admission.error()

    def _cache_on(self, call: Call) -> bool:
        return self.cache.enabled and call.cache_mode != "off"

    async def _lookup(self, call: Call, endpoint: str, body: dict[str, Any] | None) -> Entry | None:
        """The stored answer for this request, if the cache may serve it."""
        if body is None or not self._cache_on(call):
            return None
        scope = "*" if self.cache.global_scope else (call.principal.user_id or "master")
        call.cache_key = cache_key(endpoint, body, scope)
        if call.cache_mode == "refresh":
            return None
        entry = await self.cache.get(call.cache_key)
        call.cache = "MISS" if entry is None else "HIT"
        if entry is not None:
            call.cached_deployment = entry.deployment
        return entry

    async def _serve_hit(self, call: Call, model: ModelSettings, entry: Entry) -> None:
        """Hits are free unless configured otherwise; then they are charged
        what the stored answer cost, through the same reserve and settle."""
        call.usage = Usage()
        if not self.cache.settings.charge_hits:
            return
        call.usage = entry.usage
        await self._hold(call, cost_usd(model.pricing, entry.usage))
        await self._settle_detached(call)

    def _store(self, call: Call, entry: Entry | None) -> None:
        """Keep a complete answer, off the response's path. (``cache_key`` is
        set only when the request may fill the cache; hits never get here.)"""
        if entry is not None and call.cache_key is not None:
            self._detach(self.cache.set(call.cache_key, entry))

    def _detach(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ----------------------------------------------------- provider calls
    # The router retries, falls back and keeps the circuit breakers; each
    # attempt records its route on ``call``, so ``call.route`` is the
    # deployment that served (or last failed) and a failed one is never
    # what is charged.

    async def _run(
        self, model: ModelSettings, call: Call, send: Callable[[Route], Awaitable[T]], hold: bool = False
    ) -> T:
        """``send`` to the deployments the router picks, recording each
        attempt's route on ``call``."""
        async def attempt(route: Route) -> T:
            call.route = route
            call.attempts += 1
            return await send(route)

        call.upstream_started = time.perf_counter()
        # The request's one deadline, for all its attempts (a stream's to its last byte).
        deadline = asyncio.get_running_loop().time() + self.router.timeout_s(model, call.stream, call.timeout_s)
        return await self.router.run(model, attempt, hold=hold, request_id=call.request_id, deadline=deadline)

    async def _call_chat(self, req: ChatRequest, model: ModelSettings, call: Call) -> Answer:
        async def send(route: Route) -> Answer:
            _check_translatable(req, route)
            return await route.provider.chat(req, route.target, call.request_id)

        return await self._run(model, call, send)

    async def _open_stream(
        self, req: ChatRequest, model: ModelSettings, call: Call
    ) -> tuple[Piece, AsyncIterator[Piece]]:
        """Open the stream and wait for its first event: until then a failed
        attempt can still be retried, since nothing has reached the client."""
        async def open_one(route: Route) -> tuple[Piece, AsyncIterator[Piece]]:
            _check_translatable(req, route)
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

        first, events = await self._run(model, call, open_one, hold=True)
        assert call.route is not None
        return first, self.router.track(events, call.route, call)

    async def _call_embed(self, req: EmbeddingRequest, model: ModelSettings, call: Call) -> EmbeddingAnswer:
        return await self._run(model, call, lambda route: route.provider.embed(req, route.target, call.request_id))

    # -------------------------------------------------------------- money

    async def _reserve(self, call: Call, model: ModelSettings, prompt_tokens: int, output_tokens: int) -> None:
        # Any model of the fallback chain may serve: hold what the dearest would cost.
        await self._hold(call, max(max_cost_usd(m.pricing, prompt_tokens, output_tokens)
                                   for m in self.router.chain(model)))

    async def _hold(self, call: Call, amount: Decimal) -> None:
        """Reserve ``amount`` of the caller's balance (402 when it does not fit)."""
        principal = call.principal
        if principal.user_id is None:
            return  # the master key is charged to nobody
        if amount <= 0 and principal.budget_usd is None and not principal.shared_budgets:
            return  # a model priced at zero needs no balance
        if amount > MAX_BALANCE_USD:  # can never fit, and past it the nano-dollars leave 64 bits
            raise InvalidRequest(
                f"This request could cost up to {format_usd(amount)} USD, more than any balance can hold; "
                "ask for fewer tokens (max_tokens) or choices (n).", code="invalid_value", param="max_tokens")
        call.hold = await self.ledger.reserve(
            principal.user_id, amount, key_id=principal.key_id,
            budget_usd=principal.budget_usd, budget_kind=principal.budget_period,
            shared_budgets=principal.shared_budgets,
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
        await asyncio.shield(self._detach(self._settle(call)))

    # Metrics, the request log line, Langfuse and Sentry (wired by the state).
    observer: Observer | None = None

    def finish(self, call: Call, status: int) -> None:
        """Record the request's usage (batched, off the hot path) and observe it."""
        usage = call.usage or Usage()
        now = time.perf_counter()
        principal = call.principal
        if call.admission is not None and call.admission.allowed:
            # Only provider tokens count: a hit or a failure gives the estimate back.
            self.limiter.correct(call.admission, 0 if call.cache == "HIT" else usage.total_tokens)
        cost = call.charged if call.charged is not None else (call.cost or Decimal(0))
        self.usage.record(UsageEvent(
            # The model name is the client's and not yet validated: bound it to its column.
            request_id=call.request_id, model=call.model[:200].replace("\x00", ""), endpoint=call.endpoint,
            status=status,
            user_id=principal.user_id, key_id=principal.key_id, deployment=call.deployment, stream=call.stream,
            cache=call.cache, input_tokens=usage.input_tokens, cached_input_tokens=usage.cached_input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=cost, latency_ms=(now - call.started) * 1000,
            ttft_ms=(call.first_byte_at - call.started) * 1000 if call.first_byte_at else None,
        ))
        if self.observer is not None:
            self.observer.observe(call, status, now, cost)

    async def drain(self) -> None:
        """Wait for settlements and cache writes in flight (graceful shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.limiter.drain()

    # --------------------------------------------------------------- chat

    async def chat(self, req: ChatRequest, call: Call) -> Answer:
        model = self._resolve(req.model, call)
        _check_max_tokens(req, model)
        entry = await self._gate(call, model, _admission_tokens(req), req.cache_source, prompt_upper_bound(req),
                                 (req.max_tokens or model.max_output_tokens) * (req.n or 1))
        if entry is not None:
            await self._serve_hit(call, model, entry)
            return Answer.passed(entry.body, "openai.chat", entry.usage)
        try:
            result = await self._call_chat(req, model, call)
        except BaseException:
            await self._settle_detached(call)  # nothing produced: release, charge nothing
            raise
        call.usage = result.usage
        if call.usage is None:
            call.usage, call.usage_estimated = _estimated_usage(req, result), True
        await self._settle_detached(call)
        if call.cache_key is not None and call.deployment is not None:
            stored = result.body_in("openai.chat")
            if stored is None:  # the cache keeps OpenAI chat bodies
                stored = orjson.dumps(encode_chat_response(result.response))
                if result.raw is None:  # encode once: the client gets the same bytes the cache keeps
                    result.raw, result.dialect = stored, "openai.chat"
            self._store(call, Entry(stored, call.deployment, call.usage))
        return result

    async def chat_stream(self, req: ChatRequest, call: Call) -> AsyncIterator[Piece]:
        """Open the stream and wait for its first event, so that a failure
        before any byte reaches the client is still a plain HTTP error."""
        call.stream = True
        model = self._resolve(req.model, call)
        _check_max_tokens(req, model)
        entry = await self._gate(call, model, _admission_tokens(req), req.cache_source, prompt_upper_bound(req),
                                 (req.max_tokens or model.max_output_tokens) * (req.n or 1))
        if entry is not None:
            await self._serve_hit(call, model, entry)
            call.first_byte_at = time.perf_counter()
            return self._replayed(entry, req.include_usage, call)
        try:
            first, events = await self._open_stream(req, model, call)
        except BaseException:
            await self._settle_detached(call)
            raise
        call.first_byte_at = time.perf_counter()
        return self._observed(first, events, call, req)

    async def _replayed(self, entry: Entry, include_usage: bool, call: Call) -> AsyncIterator[Piece]:
        try:
            for chunk in replay_chunks(entry, include_usage):
                yield chunk
        finally:
            self.finish(call, call.status)

    async def _observed(
        self, first: Piece, events: AsyncIterator[Piece], call: Call, req: ChatRequest
    ) -> AsyncIterator[Piece]:
        produced = 0  # output tokens seen, in case the stream ends without usage
        assembler = None
        if call.cache_key is not None and call.route is not None:
            assembler = StreamAssembler(f"chatcmpl-{call.request_id}", call.route.deployment.model, int(time.time()))
        completed = False
        try:
            event = first
            while True:
                if assembler is not None:
                    assembler.feed(event)
                if event.usage is not None:
                    call.usage = event.usage
                elif not event.decoded:
                    produced += 1  # passed through undecoded: about one token a chunk
                else:
                    for item in event.events:
                        if isinstance(item, UsageDelta):
                            call.usage = item.usage
                        elif isinstance(item, TextDelta):
                            produced += estimate_text(item.text)
                        elif isinstance(item, ToolCallDelta):
                            produced += estimate_text(item.arguments) + (1 if item.name else 0)
                yield event
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    completed = True
                    return
        except GatewayError as exc:
            call.status = exc.status_code
            raise
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            if call.usage is None and produced:
                call.usage, call.usage_estimated = Usage(estimate_prompt(req), produced), True
            await self._settle_detached(call)
            if completed and assembler is not None and call.usage is not None and call.deployment is not None:
                self._store(call, assembler.entry(call.deployment, call.usage))
            self.finish(call, call.status)

    # --------------------------------------------------------- embeddings

    async def embed(self, req: EmbeddingRequest, call: Call) -> EmbeddingAnswer:
        call.endpoint = "embeddings"
        model = self._resolve(req.model, call)
        bound = embedding_upper_bound(req.inputs)
        entry = await self._gate(call, model, bound, ("embeddings", req.raw), bound, 0)
        if entry is not None:
            await self._serve_hit(call, model, entry)
            return EmbeddingAnswer(entry.usage, entry.body)
        try:
            result = await self._call_embed(req, model, call)
        except BaseException:
            await self._settle_detached(call)
            raise
        call.usage = result.usage or Usage(
            sum(estimate_text(i) if isinstance(i, str) else len(i) for i in req.inputs))
        await self._settle_detached(call)
        if call.cache_key is not None and call.deployment is not None:
            if result.raw is None and result.response is not None:  # encode once, for the client and the cache
                result.raw = orjson.dumps(encode_embedding_response(result.response))
            if result.raw is not None:
                self._store(call, Entry(result.raw, call.deployment, call.usage))
        return result


__all__ = ["Answer", "Call", "EmbeddingAnswer", "Pipeline"]
