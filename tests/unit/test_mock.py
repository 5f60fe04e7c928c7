"""The built-in mock provider: deterministic, steerable, shaped by settings."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from llm_gateway.api.openai.decode import decode_chat_request, decode_embedding_request
from llm_gateway.errors import GatewayError, UpstreamError, UpstreamRateLimited, UpstreamTimeout
from llm_gateway.providers.base import Target
from llm_gateway.providers.mock import MockProvider
from llm_gateway.settings import ProviderSettings
from llm_gateway.types import ChatResponse, FinishDelta, TextDelta, ToolCallDelta, UsageDelta

TARGET = Target("mock", 4096)


def provider(**kw: Any) -> MockProvider:
    return MockProvider(ProviderSettings(name="mock", kind="mock", **kw))


def chat(body: dict[str, Any], **kw: Any) -> ChatResponse:
    return asyncio.run(provider(**kw).chat(decode_chat_request({"model": "mock", **body}), TARGET, "r"))


def stream(body: dict[str, Any], **kw: Any) -> list[Any]:
    async def run() -> list[Any]:
        p = provider(**kw)
        events = await p.chat_stream(decode_chat_request({"model": "mock", "stream": True, **body}), TARGET, "r")
        return [e async for e in events]

    return asyncio.run(run())


USER = [{"role": "user", "content": "one two three four five six"}]


def test_same_text_streamed_or_not_and_deterministic() -> None:
    whole = chat({"messages": USER})
    assert whole.choices[0].text == "Mock reply: one two three four five six"
    assert chat({"messages": USER}).choices[0].text == whole.choices[0].text
    events = stream({"messages": USER})
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == whole.choices[0].text
    assert isinstance(events[-1], UsageDelta) and events[-1].usage == whole.usage


def test_chunks_setting_controls_stream_pieces() -> None:
    assert len([e for e in stream({"messages": USER}) if isinstance(e, TextDelta)]) == 8
    assert len([e for e in stream({"messages": USER}, chunks=2) if isinstance(e, TextDelta)]) == 2


def test_latency_setting_delays_first_byte() -> None:
    started = time.perf_counter()
    chat({"messages": USER}, latency_ms=120)
    assert time.perf_counter() - started >= 0.12


def test_max_tokens_truncates_with_length() -> None:
    resp = chat({"messages": USER, "max_tokens": 3})
    assert resp.choices[0].finish_reason == "length" and resp.usage is not None
    assert resp.usage.output_tokens == 3


def test_tool_call_then_answer() -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer"}, "q": {"type": "string"}}, "required": ["q"]}}}
    resp = chat({"messages": USER, "tools": [tool]})
    call = resp.choices[0].tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls" and call.name == "lookup" and call.arguments == '{"q":"mock"}'
    events = stream({"messages": USER, "tools": [tool]})
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0].id == call.id and "".join(d.arguments for d in deltas) == call.arguments
    assert [e.reason for e in events if isinstance(e, FinishDelta)] == ["tool_calls"]
    history = [*USER, {"role": "assistant", "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": "lookup", "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "42"}]
    assert chat({"messages": history, "tools": [tool]}).choices[0].text == "Mock answer from the tool result: 42"


@pytest.mark.parametrize(("steer", "error"), [
    ("mock-error:429", UpstreamRateLimited), ("mock-error:500", UpstreamError), ("mock-error:timeout", UpstreamTimeout),
])
def test_errors_on_request(steer: str, error: type[GatewayError]) -> None:
    with pytest.raises(error):
        chat({"messages": [{"role": "user", "content": steer}]})


def test_embeddings_are_deterministic_and_normalised() -> None:
    async def run(body: dict[str, Any]) -> Any:
        return await provider().embed(decode_embedding_request({"model": "mock", **body}), TARGET, "r")

    a = asyncio.run(run({"input": ["x", "y"]}))
    b = asyncio.run(run({"input": ["x"], "dimensions": 4}))
    assert len(a.vectors[0]) == 16 and len(b.vectors[0]) == 4
    assert a.vectors[0] != a.vectors[1]
    assert asyncio.run(run({"input": "x"})).vectors[0] == a.vectors[0]
    assert abs(sum(v * v for v in a.vectors[0]) - 1) < 1e-4
    assert isinstance(asyncio.run(run({"input": "x", "encoding_format": "base64"})).vectors[0], str)
