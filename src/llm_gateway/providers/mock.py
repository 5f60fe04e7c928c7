"""The built-in ``mock`` provider: deterministic answers with no network.

For demos, tests and benchmarks. It answers the same text streamed or not,
reports usage, and can be steered from the last user message:

- ``mock-error:<status>`` (e.g. ``mock-error:429``, ``mock-error:500``) fails
  the call as a provider answering that status would; ``mock-error:timeout``
  as a timed-out provider; ``mock-error:midstream`` fails a stream after its
  first chunk.
- With ``tools`` (and ``tool_choice`` not ``none``) and no tool result yet in
  the conversation's last turn, it calls the named or first tool with
  arguments built from the tool's JSON schema; after a tool result it answers
  in text quoting the result.
- With ``response_format`` json_object/json_schema it answers JSON.

Provider settings ``latency_ms`` (delay before the first byte) and ``chunks``
(stream pieces; 0 means one per word) shape its timing.

It is as capped as a real provider, since anyone may call it: a malformed
tool or answer schema is its 400 naming the param (``mock_schemas``); an
answer is at most ``max_tokens`` (else the model's ``max_output_tokens``) and
``OUTPUT_CHARS`` over all ``n`` choices; embeddings at most
``mock_embeddings.MAX_VALUES`` numbers, built off the event loop when large.
Its steered failures do not count against its circuit (``routing.router``).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
import uuid
from collections.abc import AsyncIterator

import orjson

from llm_gateway.errors import UpstreamError, UpstreamTimeout, upstream_status_error
from llm_gateway.providers.base import Target
from llm_gateway.providers.mock_embeddings import MAX_VALUES, OFF_LOOP, embedding_vectors
from llm_gateway.providers.mock_schemas import check_schemas, example_value
from llm_gateway.settings import ProviderSettings
from llm_gateway.tokens import estimate_prompt, estimate_text
from llm_gateway.types import (
    ChatRequest,
    ChatResponse,
    Choice,
    EmbeddingRequest,
    EmbeddingResponse,
    FinishDelta,
    FinishReason,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from llm_gateway.wire.answer import Answer, EmbeddingAnswer, Piece

_ERROR = re.compile(r"mock-error:(\w+)")
EMBEDDING_DIMENSIONS = 16
# The most text the mock writes for one request, all ``n`` choices together:
# like a real model's, its answer is bounded whatever the prompt and ``n``.
OUTPUT_CHARS = 256 * 1024
CHARS_PER_TOKEN = 4  # as ``tokens.estimate_text`` counts


class _Plan:
    """What the mock will answer for one request (pure, deterministic).

    Each choice is at most ``max_tokens`` (else the model's
    ``max_output_tokens``) tokens of ~4 characters, and at most its share of
    ``OUTPUT_CHARS``; a longer answer is cut there with finish reason
    ``length``, as a real model's."""

    def __init__(self, req: ChatRequest, target: Target, provider: str) -> None:
        check_schemas(req, provider)
        n = req.n or 1
        tokens = max(1, min(req.max_tokens or target.max_output_tokens, target.max_output_tokens))
        limit = max(1, min(tokens * CHARS_PER_TOKEN, OUTPUT_CHARS // n))  # characters per choice
        last = req.messages[-1]
        last_text = last.text
        user_text = last_text if last.role == "user" else next(
            (m.text for m in reversed(req.messages) if m.role == "user"), "")
        self.error = None
        m = _ERROR.search(last_text) if last.role == "user" else None
        if m:
            self.error = m.group(1)
        self.tool_call: ToolCall | None = None
        self.text: str | None = None
        self.finish: FinishReason = "stop"
        choice = req.tool_choice.mode if req.tool_choice else "auto"
        if req.tools and choice != "none" and last.role != "tool":
            tool = req.tools[0]
            if req.tool_choice and req.tool_choice.mode == "named":
                tool = next((t for t in req.tools if t.name == req.tool_choice.name), tool)
            args = orjson.dumps(example_value(tool.parameters or {"type": "object"})).decode()
            room = max(0, limit - len(tool.name))
            self.finish = "tool_calls"
            if len(args) > room:
                args, self.finish = args[:room], "length"
            digest = hashlib.sha256(f"{tool.name}{user_text[:limit]}".encode("utf-8", "surrogatepass")).hexdigest()
            self.tool_call = ToolCall(f"call_{digest[:24]}", tool.name, args)
            output = estimate_text(tool.name) + estimate_text(args)
        else:
            if last.role == "tool":
                text = f"Mock answer from the tool result: {last_text[:limit]}"
            elif req.response_format is not None and req.response_format.type != "text":
                rf = req.response_format
                value = example_value(rf.schema) if rf.type == "json_schema" and rf.schema else {
                    "echo": user_text[:limit]}
                text = orjson.dumps(value).decode()
            else:
                text = f"Mock reply: {user_text[:limit]}" if user_text else "Mock reply."
            if len(text) > limit:
                text, self.finish = text[:limit], "length"
            self.text = text
            output = estimate_text(text)
        self.pieces = re.findall(r"\S+\s*|\s+", self.text) if self.text else []
        self.usage = Usage(input_tokens=estimate_prompt(req), output_tokens=max(1, min(output, tokens)))


class MockProvider:
    """The ``mock`` kind: deterministic, in-process, instant unless told otherwise."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.name = settings.name
        self.kind = settings.kind
        self._latency = settings.latency_ms / 1000
        self._chunks = settings.chunks

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def _before(self, plan: _Plan) -> None:
        if self._latency:
            await asyncio.sleep(self._latency)
        if plan.error and plan.error != "midstream":
            if plan.error == "timeout":
                raise UpstreamTimeout(f"The {self.name} provider timed out.")
            if plan.error.isdigit():
                raise upstream_status_error(
                    int(plan.error), f"Mock error {plan.error} as requested.", provider=self.name
                )
            raise UpstreamError(f"Mock error {plan.error!r} as requested.")

    async def chat(self, req: ChatRequest, target: Target, request_id: str) -> Answer:
        plan = _Plan(req, target, self.name)
        await self._before(plan)
        n = req.n or 1
        choices = [
            Choice(i, plan.text, [plan.tool_call] if plan.tool_call else [], plan.finish) for i in range(n)
        ]
        usage = Usage(plan.usage.input_tokens, plan.usage.output_tokens * n)
        return Answer.of(ChatResponse(f"chatcmpl-{uuid.uuid4().hex}", target.model, int(time.time()), choices,
                                      usage))

    async def chat_stream(self, req: ChatRequest, target: Target, request_id: str) -> AsyncIterator[Piece]:
        plan = _Plan(req, target, self.name)
        await self._before(plan)
        return self._events(plan, req.n or 1)

    async def _events(self, plan: _Plan, n: int) -> AsyncIterator[Piece]:
        pieces = plan.pieces
        if self._chunks and pieces:
            size = math.ceil(len(pieces) / self._chunks)
            pieces = ["".join(pieces[i : i + size]) for i in range(0, len(pieces), size)]
        for index in range(n):
            if plan.tool_call:
                call = plan.tool_call
                yield Piece.of(ToolCallDelta(0, "", call.id, call.name, index))
                yield Piece.of(ToolCallDelta(0, call.arguments, index=index))
            for i, piece in enumerate(pieces):
                if i == 1 and plan.error == "midstream":
                    raise UpstreamError(f"The {self.name} provider failed mid-stream (as requested).")
                yield Piece.of(TextDelta(piece, index))
                await asyncio.sleep(0)
            yield Piece.of(FinishDelta(plan.finish, index))
        yield Piece.of(UsageDelta(Usage(plan.usage.input_tokens, plan.usage.output_tokens * n)))

    async def embed(self, req: EmbeddingRequest, target: Target, request_id: str) -> EmbeddingAnswer:
        dims = req.dimensions or EMBEDDING_DIMENSIONS
        values = len(req.inputs) * dims
        if values > MAX_VALUES:
            raise upstream_status_error(
                400, f"The {target.model} model returns at most {MAX_VALUES} numbers per request (inputs × "
                f"dimensions); this request asks for {len(req.inputs)} × {dims}. Send fewer inputs or dimensions.",
                code="invalid_value", param="dimensions" if req.dimensions else "input", provider=self.name)
        base64 = req.encoding_format == "base64"
        if values > OFF_LOOP:  # a few milliseconds of work or more: not on the event loop
            vectors = await asyncio.to_thread(embedding_vectors, req.inputs, dims, base64)
        else:
            vectors = embedding_vectors(req.inputs, dims, base64)
        tokens = sum(estimate_text(i) if isinstance(i, str) else len(i) for i in req.inputs)
        return EmbeddingAnswer.of(EmbeddingResponse(target.model, vectors, Usage(input_tokens=tokens)))
