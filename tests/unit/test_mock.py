"""The built-in mock provider: deterministic, steerable, shaped by settings."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from typing import Any

import jsonschema
import orjson
import pytest

from llm_gateway.errors import GatewayError, UpstreamError, UpstreamRateLimited, UpstreamRejected, UpstreamTimeout
from llm_gateway.providers.base import Target
from llm_gateway.providers.mock import OUTPUT_CHARS, MockProvider
from llm_gateway.providers.mock_embeddings import MAX_VALUES
from llm_gateway.settings import ProviderSettings
from llm_gateway.types import ChatResponse, FinishDelta, TextDelta, ToolCallDelta, UsageDelta
from llm_gateway.wire.anthropic.decode import decode_messages_request
from llm_gateway.wire.openai_chat.decode import decode_chat_request, decode_embedding_request
from tests.answers import collect_events, unwrap

TARGET = Target("mock", 4096)


def provider(**kw: Any) -> MockProvider:
    return MockProvider(ProviderSettings(name="mock", kind="mock", **kw))


def chat(body: dict[str, Any], **kw: Any) -> ChatResponse:
    return asyncio.run(provider(**kw).chat(decode_chat_request({"model": "mock", **body}), TARGET, "r")).response


def stream(body: dict[str, Any], **kw: Any) -> list[Any]:
    async def run() -> list[Any]:
        p = provider(**kw)
        events = await p.chat_stream(decode_chat_request({"model": "mock", "stream": True, **body}), TARGET, "r")
        return await collect_events(events)

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
        return unwrap(await provider().embed(decode_embedding_request({"model": "mock", **body}), TARGET, "r"))

    a = asyncio.run(run({"input": ["x", "y"]}))
    b = asyncio.run(run({"input": ["x"], "dimensions": 4}))
    assert len(a.vectors[0]) == 16 and len(b.vectors[0]) == 4
    assert a.vectors[0] != a.vectors[1]
    assert asyncio.run(run({"input": "x"})).vectors[0] == a.vectors[0]
    assert abs(sum(v * v for v in a.vectors[0]) - 1) < 1e-4
    assert isinstance(asyncio.run(run({"input": "x", "encoding_format": "base64"})).vectors[0], str)


# ------------------------------------------------------------ hostile input (issue 18)

def _deep(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


def _wide(names: int) -> dict[str, Any]:
    return {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(names)}}


# (schema, where the message says the problem is)
MALFORMED: list[tuple[Any, str]] = [
    ({"type": "object", "required": 5}, "'required'"),
    ({"type": "string", "enum": 5}, "'enum'"),
    ({"type": "object", "properties": [1]}, "'properties'"),
    ({"type": "object", "properties": {"a": 5}}, "'properties.a'"),
    ({"type": "object", "properties": {"a": {"type": "object", "required": "a"}}}, "'properties.a.required'"),
    ({"type": "strnig"}, "'type'"),
    ({"type": []}, "'type'"),
    ({"type": "array", "items": {"anyOf": []}}, "'items.anyOf'"),
    ({"type": "array", "items": {"type": "string", "maxLength": -1}}, "'items.maxLength'"),
    ({"type": "number", "multipleOf": 0}, "'multipleOf'"),
    ({"type": "object", "required": ["a", "a"]}, "'required'"),
    ({"$ref": 5}, "'$ref'"),
    (_deep(400), "nested more than"),
    ({"type": "string", "enum": [_deep(400)]}, "nested more than"),
    (_wide(30_000), "larger than"),
]


def _steps(body: dict[str, Any], anthropic: bool = False) -> Any:
    req = decode_messages_request({"model": "mock", "max_tokens": 100, **body}) if anthropic else \
        decode_chat_request({"model": "mock", **body})
    return asyncio.run(provider().chat(req, TARGET, "r")).response


@pytest.mark.parametrize(("schema", "where"), MALFORMED)
def test_a_malformed_schema_is_the_clients_400_naming_the_param(schema: Any, where: str) -> None:
    tools = [{"type": "function", "function": {"name": "ok", "parameters": {"type": "object"}}},
             {"type": "function", "function": {"name": "bad", "parameters": schema}}]
    cases = [
        ({"messages": USER, "tools": tools}, False, "tools[1].function.parameters"),
        ({"messages": USER, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}},
         False, "response_format.json_schema.schema"),
        ({"messages": USER, "tools": [{"name": "ok", "input_schema": {"type": "object"}},
                                      {"name": "bad", "input_schema": schema}]}, True, "tools[1].input_schema"),
        ({"messages": USER, "output_config": {"format": {"type": "json_schema", "schema": schema}}},
         True, "output_config.format.schema"),
    ]
    for body, anthropic, param in cases:
        with pytest.raises(UpstreamRejected) as caught:
            _steps(body, anthropic)
        err = caught.value
        # The provider's own 4xx: passed on as 400, neither retried nor held against the deployment.
        assert (err.status_code, err.type, err.param, err.retryable) == (400, "invalid_request_error", param, False)
        assert where in err.message and len(err.message) < 500


def test_malformed_cases_are_the_ones_jsonschema_refuses() -> None:
    """The hand-rolled checks agree with the 2020-12 meta-schema on these
    (those it can check without recursing too deep); valid schemas pass, and
    the mock's arguments for them validate."""
    checked = 0
    for schema, _ in MALFORMED:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError:
            checked += 1
        except RecursionError:
            pass
    assert checked >= 10
    valid: list[dict[str, Any]] = [
        {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": ["integer", "null"]},
                                          "tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
         "required": ["q", "n", "tags"], "additionalProperties": False},
        {"type": "object", "properties": {"when": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
                                          "mode": {"const": "fast"}}, "required": ["mode"],
         "$defs": {"x": {"type": "boolean"}}},
        {"type": "object", "properties": {"deep": _deep(12)}, "required": ["deep"]},
    ]
    for schema in valid:
        jsonschema.Draft202012Validator.check_schema(schema)
        tool = {"type": "function", "function": {"name": "t", "parameters": schema}}
        call = chat({"messages": USER, "tools": [tool]}).choices[0].tool_calls[0]
        jsonschema.validate(orjson.loads(call.arguments), schema)
    # A JSON Schema (ECMA-262) pattern that Python's re, and so jsonschema here, cannot read: a real provider takes it.
    ecma = {"type": "object", "properties": {"p": {"type": "string", "pattern": "^\\p{L}+$"}}, "required": ["p"]}
    tool = {"type": "function", "function": {"name": "t", "parameters": ecma}}
    assert chat({"messages": USER, "tools": [tool]}).choices[0].tool_calls[0].arguments == '{"p":"mock"}'


def test_answers_are_bounded_like_a_real_models() -> None:
    prompt = [{"role": "user", "content": "word " * 200_000}]  # 1 MB
    resp = chat({"messages": prompt, "n": 128})
    assert len(resp.choices) == 128 and resp.usage is not None
    assert sum(len(c.text or "") for c in resp.choices) <= OUTPUT_CHARS
    assert {c.finish_reason for c in resp.choices} == {"length"}
    events = stream({"messages": prompt, "n": 128})
    assert sum(len(e.text) for e in events if isinstance(e, TextDelta)) <= OUTPUT_CHARS
    # At most max_tokens (4 characters a token), billed no more than that.
    small = chat({"messages": prompt, "max_tokens": 10})
    assert len(small.choices[0].text or "") <= 40 and small.usage is not None and small.usage.output_tokens <= 10
    # Without max_tokens, the model's max_output_tokens bounds it.
    one = chat({"messages": prompt})
    assert len(one.choices[0].text or "") <= TARGET.max_output_tokens * 4
    assert one.usage is not None and one.usage.output_tokens <= TARGET.max_output_tokens


def test_tool_arguments_and_json_answers_are_bounded_too() -> None:
    required = [f"p{i}" for i in range(15_000)]
    tool = {"type": "function", "function": {"name": "t", "parameters": {"type": "object", "required": required}}}
    resp = chat({"messages": USER, "tools": [tool], "n": 64})
    assert sum(len(c.tool_calls[0].arguments) for c in resp.choices) <= OUTPUT_CHARS
    assert resp.choices[0].finish_reason == "length"
    echo = chat({"messages": [{"role": "user", "content": "x" * 100_000}], "max_tokens": 50,
                 "response_format": {"type": "json_object"}})
    assert len(echo.choices[0].text or "") <= 200 and echo.choices[0].finish_reason == "length"


def test_embeddings_have_a_size_cap_and_cheap_vectors() -> None:
    async def run(body: dict[str, Any]) -> Any:
        return unwrap(await provider().embed(decode_embedding_request({"model": "mock", **body}), TARGET, "r"))

    with pytest.raises(UpstreamRejected) as caught:
        asyncio.run(run({"input": ["x"] * 2048, "dimensions": 8192}))
    assert (caught.value.status_code, caught.value.param) == (400, "dimensions")
    inputs = [f"text {i}" for i in range(MAX_VALUES // 8192)]
    big = asyncio.run(run({"input": inputs, "dimensions": 8192}))
    assert len(big.vectors) == len(inputs) and {len(v) for v in big.vectors} == {8192}
    assert len({tuple(v) for v in big.vectors}) == len(inputs)
    assert abs(sum(x * x for x in big.vectors[7]) - 1) < 1e-4
    encoded = asyncio.run(run({"input": inputs[:3], "dimensions": 8192, "encoding_format": "base64"}))
    for vector, text in zip(big.vectors, encoded.vectors, strict=False):
        assert isinstance(text, str)
        floats = struct.unpack("<8192f", base64.b64decode(text))
        assert max(abs(a - b) for a, b in zip(vector, floats, strict=True)) < 1e-7
