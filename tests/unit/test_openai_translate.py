"""The OpenAI dialect: decoding client requests, encoding responses and
chunks, and reading the upstream wire format — from tests/fixtures/wire/openai."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest

from llm_gateway.errors import InvalidRequest
from llm_gateway.types import (
    FinishDelta,
    ImagePart,
    OtherPart,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from llm_gateway.wire.openai_chat import from_wire, to_wire
from llm_gateway.wire.openai_chat.decode import decode_chat_request, decode_embedding_request
from llm_gateway.wire.openai_chat.encode import ChunkEncoder, encode_chat_response
from tests import fixtures
from tests.openapi import validate

WIRE = fixtures.WIRE / "openai"


def wire(name: str) -> Any:
    return json.loads((WIRE / name).read_text())


def sse_payloads(name: str) -> list[bytes]:
    text = (WIRE / name).read_bytes().replace(b"\r\n", b"\n")
    return [f[6:] for f in text.split(b"\n\n") if f.startswith(b"data: ") and f != b"data: [DONE]"]


def test_decode_full_request() -> None:
    body = wire("chat-request-full.assembled.json")
    req = decode_chat_request(body)
    assert req.model == body["model"]
    roles = [m.role for m in req.messages]
    assert roles[0] == "system"  # developer → system
    assert "assistant" in roles and "tool" in roles
    assistant = next(m for m in req.messages if m.tool_calls)
    assert assistant.tool_calls[0].name
    tool = next(m for m in req.messages if m.role == "tool")
    assert tool.tool_call_id == assistant.tool_calls[0].id
    assert req.tools and req.tools[0].strict is True
    assert req.response_format and req.response_format.type == "json_schema"
    assert req.stream and req.include_usage
    assert req.max_tokens == body["max_completion_tokens"]


def test_decode_tool_choice_named_and_images() -> None:
    req = decode_chat_request(wire("chat-request-tool-choice-named.assembled.json"))
    assert req.tool_choice is not None and req.tool_choice.mode == "named" and req.tool_choice.name
    req = decode_chat_request({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
    ]}]})
    parts = req.messages[0].content
    assert isinstance(parts[1], ImagePart) and parts[1].detail == "low" and not parts[1].is_data_url
    assert isinstance(parts[2], OtherPart)


def test_decode_every_fixture_request() -> None:
    for path in fixtures.wire_files("openai", "chat-request-*.json"):
        req = decode_chat_request(json.loads(path.read_text()))
        assert req.messages, path.name


def test_decode_embeddings() -> None:
    req = decode_embedding_request(wire("embeddings-request.spec.json"))
    assert req.inputs and req.encoding_format == "float"
    req = decode_embedding_request(wire("embeddings-request-base64.json"))
    assert req.encoding_format == "base64"
    assert decode_embedding_request({"model": "m", "input": [1, 2, 3]}).inputs == [[1, 2, 3]]
    with pytest.raises(InvalidRequest) as err:
        decode_embedding_request({"model": "m", "input": ""})
    assert err.value.param == "input"


def test_passthrough_body_does_not_mutate_the_request() -> None:
    body = {"model": "alias", "messages": [{"role": "user", "content": "x"}], "stream": True,
            "stream_options": {"include_usage": False}, "logit_bias": {"1": 2}}
    original = copy.deepcopy(body)
    req = decode_chat_request(body)
    sent = to_wire.passthrough_chat_body(req, "upstream-model", force_usage=True)
    assert sent["model"] == "upstream-model" and sent["stream_options"] == {"include_usage": True}
    assert sent["logit_bias"] == {"1": 2}
    assert body == original


def test_canonical_to_wire_round_trip() -> None:
    body = wire("chat-request-full.assembled.json")
    req = decode_chat_request(body)
    req.origin = None
    sent = to_wire.chat_body(req, "gpt-x")
    again = decode_chat_request(sent)
    assert [m.role for m in again.messages] == [m.role for m in req.messages]
    assert again.tools == req.tools and again.tool_choice == req.tool_choice
    assert again.response_format == req.response_format


@pytest.mark.parametrize("name", [
    "chat-response-tool-calls.json", "chat-response-default.spec.json",
    "chat-response-parallel-tool-calls.openai-python.json", "chat-response-json-content.json",
])
def test_response_round_trip_fits_schema(name: str) -> None:
    data = wire(name)
    resp = from_wire.chat_response(data)
    encoded = encode_chat_response(resp)
    validate(encoded, "CreateChatCompletionResponse")
    assert [c["finish_reason"] for c in encoded["choices"]] == [c["finish_reason"] for c in data["choices"]]
    for got, want in zip(encoded["choices"], data["choices"], strict=True):
        assert got["message"]["content"] == want["message"].get("content")
        assert len(got["message"].get("tool_calls", [])) == len(want["message"].get("tool_calls") or [])
    assert encoded["usage"]["prompt_tokens"] == data["usage"]["prompt_tokens"]


@pytest.mark.parametrize("name", [p.name for p in fixtures.wire_files("openai", "chat-stream-*.sse.txt")])
def test_stream_fixture_to_canonical_and_back(name: str) -> None:
    events = [e for p in sse_payloads(name) for e in from_wire.chunk_events(orjson.loads(p))]
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    expected = "".join(
        (c["choices"][0]["delta"].get("content") or "")
        for c in map(orjson.loads, sse_payloads(name)) if c["choices"]
    )
    assert text == expected
    finishes = [e for e in events if isinstance(e, FinishDelta)]
    assert len(finishes) >= 1
    encoder = ChunkEncoder("chatcmpl-x", "m", 1, include_usage=True)
    for event in events:
        data = encoder.encode(event)
        if data is not None:
            validate(orjson.loads(data), "CreateChatCompletionStreamResponse")
    if "include-usage" in name:
        assert any(isinstance(e, UsageDelta) for e in events)


def test_tool_call_stream_arguments_reassemble() -> None:
    events = [e for p in sse_payloads("chat-stream-parallel-tool-calls.sse.txt")
              for e in from_wire.chunk_events(orjson.loads(p))]
    calls: dict[int, dict[str, str]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            call = calls.setdefault(e.tool_index, {"name": "", "args": ""})
            call["name"] += e.name or ""
            call["args"] += e.arguments
    assert len(calls) >= 2
    for call in calls.values():
        assert call["name"]
        json.loads(call["args"])


def test_chunk_encoder_usage_only_when_asked() -> None:
    usage = UsageDelta(Usage(10, 5, 2))
    assert ChunkEncoder("i", "m", 1, include_usage=False).encode(usage) is None
    data = ChunkEncoder("i", "m", 1, include_usage=True).encode(usage)
    assert data is not None
    chunk = orjson.loads(data)
    assert chunk["choices"] == [] and chunk["usage"]["prompt_tokens_details"]["cached_tokens"] == 2
    validate(chunk, "CreateChatCompletionStreamResponse")
