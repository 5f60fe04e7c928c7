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
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from llm_gateway.api.openai.encode import floats_to_base64
from llm_gateway.errors import UpstreamError, UpstreamTimeout, upstream_status_error
from llm_gateway.providers.base import ChunkOrEvent, Target
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

_ERROR = re.compile(r"mock-error:(\w+)")
EMBEDDING_DIMENSIONS = 16


def _schema_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "mock"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        required = schema.get("required") or list(props)
        return {k: _schema_value(props.get(k)) for k in required}
    if kind == "array":
        return [_schema_value(schema.get("items"))]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "mock"


class _Plan:
    """What the mock will answer for one request (pure, deterministic)."""

    def __init__(self, req: ChatRequest) -> None:
        last = req.messages[-1]
        user_text = next((m.text for m in reversed(req.messages) if m.role == "user"), "")
        self.error = None
        m = _ERROR.search(last.text if last.role == "user" else "")
        if m:
            self.error = m.group(1)
        self.tool_call: ToolCall | None = None
        self.text: str | None = None
        choice = req.tool_choice.mode if req.tool_choice else "auto"
        if req.tools and choice != "none" and last.role != "tool":
            tool = req.tools[0]
            if req.tool_choice and req.tool_choice.mode == "named":
                tool = next((t for t in req.tools if t.name == req.tool_choice.name), tool)
            args = orjson.dumps(_schema_value(tool.parameters or {"type": "object"})).decode()
            digest = hashlib.sha256(f"{tool.name}{user_text}".encode()).hexdigest()[:24]
            self.tool_call = ToolCall(f"call_{digest}", tool.name, args)
        elif last.role == "tool":
            self.text = f"Mock answer from the tool result: {last.text}"
        elif req.response_format is not None and req.response_format.type != "text":
            rf = req.response_format
            value = _schema_value(rf.schema) if rf.type == "json_schema" and rf.schema else {"echo": user_text}
            self.text = orjson.dumps(value).decode()
        else:
            self.text = f"Mock reply: {user_text}" if user_text else "Mock reply."
        self.finish: FinishReason = "tool_calls" if self.tool_call else "stop"
        self.pieces = re.findall(r"\S+\s*|\s+", self.text) if self.text else []
        if req.max_tokens is not None and len(self.pieces) > req.max_tokens:
            self.pieces = self.pieces[: req.max_tokens]
            self.text = "".join(self.pieces)
            self.finish = "length"
        output = len(self.pieces) if self.text is not None else 0
        if self.tool_call:
            output = estimate_text(self.tool_call.name) + estimate_text(self.tool_call.arguments)
        self.usage = Usage(input_tokens=estimate_prompt(req), output_tokens=max(output, 1))


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

    async def chat(self, req: ChatRequest, target: Target, request_id: str) -> ChatResponse:
        plan = _Plan(req)
        await self._before(plan)
        n = req.n or 1
        choices = [
            Choice(i, plan.text, [plan.tool_call] if plan.tool_call else [], plan.finish) for i in range(n)
        ]
        usage = Usage(plan.usage.input_tokens, plan.usage.output_tokens * n)
        return ChatResponse(f"chatcmpl-{uuid.uuid4().hex}", target.model, int(time.time()), choices, usage)

    async def chat_stream(self, req: ChatRequest, target: Target, request_id: str) -> AsyncIterator[ChunkOrEvent]:
        plan = _Plan(req)
        await self._before(plan)
        return self._events(plan, req.n or 1)

    async def _events(self, plan: _Plan, n: int) -> AsyncIterator[ChunkOrEvent]:
        pieces = plan.pieces
        if self._chunks and pieces:
            size = math.ceil(len(pieces) / self._chunks)
            pieces = ["".join(pieces[i : i + size]) for i in range(0, len(pieces), size)]
        for index in range(n):
            if plan.tool_call:
                call = plan.tool_call
                yield ToolCallDelta(0, "", call.id, call.name, index)
                yield ToolCallDelta(0, call.arguments, index=index)
            for i, piece in enumerate(pieces):
                if i == 1 and plan.error == "midstream":
                    raise UpstreamError(f"The {self.name} provider failed mid-stream (as requested).")
                yield TextDelta(piece, index)
                await asyncio.sleep(0)
            yield FinishDelta(plan.finish, index)
        yield UsageDelta(Usage(plan.usage.input_tokens, plan.usage.output_tokens * n))

    async def embed(self, req: EmbeddingRequest, target: Target, request_id: str) -> EmbeddingResponse:
        dims = req.dimensions or EMBEDDING_DIMENSIONS
        vectors: list[list[float]] = []
        tokens = 0
        for item in req.inputs:
            text = item if isinstance(item, str) else " ".join(map(str, item))
            tokens += estimate_text(text) if isinstance(item, str) else len(item)
            raw = hashlib.shake_256(text.encode()).digest(dims * 4)
            values = [(v % 2000) / 1000 - 1 for v in struct.unpack(f"<{dims}I", raw)]
            norm = math.sqrt(sum(v * v for v in values)) or 1.0
            vectors.append([round(v / norm, 6) for v in values])
        out: list[list[float]] | list[str] = vectors
        if req.encoding_format == "base64":
            out = [floats_to_base64(v) for v in vectors]
        return EmbeddingResponse(target.model, out, Usage(input_tokens=tokens))
