"""Anthropic responses and SSE streams → canonical, from the recorded
fixtures in tests/fixtures/wire/anthropic. Streams go through the gateway's own SSE
reader line by line, then the per-request decoder."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from llm_gateway.errors import UpstreamError, UpstreamRateLimited, UpstreamRejected
from llm_gateway.providers.http import iter_sse
from llm_gateway.types import FinishDelta, StreamEvent, TextDelta, ToolCallDelta, Usage, UsageDelta
from llm_gateway.wire.anthropic.from_wire import chat_response, finish_reason, usage
from llm_gateway.wire.anthropic.stream import StreamDecoder
from tests import fixtures

WIRE = fixtures.WIRE / "anthropic"


def fixture(name: str) -> Any:
    return json.loads((WIRE / name).read_text())


def sse_payloads(raw: bytes) -> list[Any]:
    """The JSON payloads of an SSE body, parsed by the gateway's reader fed one line at a time."""

    async def lines() -> AsyncIterator[bytes]:
        for line in raw.splitlines(keepends=True):
            yield line

    async def collect() -> list[Any]:
        return [json.loads(e.data) async for e in iter_sse(lines())]  # type: ignore[arg-type]

    return asyncio.run(collect())


def decode(payloads: list[Any], json_tool: str | None = None, *, close: bool = True) -> list[StreamEvent]:
    decoder = StreamDecoder("anthropic-test", json_tool)
    events = [ev for p in payloads for ev in decoder.feed(p)]
    if close:
        decoder.close()
    return events


def decode_file(name: str, json_tool: str | None = None) -> list[StreamEvent]:
    return decode(sse_payloads((WIRE / name).read_bytes()), json_tool)


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def tool_calls(events: list[StreamEvent]) -> dict[int, dict[str, Any]]:
    calls: dict[int, dict[str, Any]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            if e.id is not None:
                assert e.tool_index not in calls, "a tool call started twice"
                calls[e.tool_index] = {"id": e.id, "name": e.name, "arguments": ""}
            calls[e.tool_index]["arguments"] += e.arguments
    return calls


def tail(events: list[StreamEvent]) -> tuple[str, Usage]:
    """The finish reason and usage, checking they close the stream in that order, once each."""
    finishes = [e for e in events if isinstance(e, FinishDelta)]
    usages = [e for e in events if isinstance(e, UsageDelta)]
    assert len(finishes) == 1 and len(usages) == 1
    assert events[-1] is usages[0]
    assert events[-2] is finishes[0]
    return finishes[0].reason, usages[0].usage


# --- non-streaming responses -------------------------------------------------------------------------


def test_text_response() -> None:
    resp = chat_response(fixture("messages-response-text.json"), created=123)
    assert resp.id == "msg_01GJyhkguJrrqMbZNzEybYFL"
    assert resp.model == "claude-haiku-4-5-20251001"
    assert resp.created == 123
    [choice] = resp.choices
    assert choice.text is not None and choice.text.startswith("I apologize, but I'm getting an error")
    assert choice.tool_calls == []
    assert choice.finish_reason == "stop"
    assert resp.usage == Usage(input_tokens=760, output_tokens=63, cached_input_tokens=0)


def test_tool_use_response() -> None:
    resp = chat_response(fixture("messages-response-tool-use.json"), created=0)
    [choice] = resp.choices
    assert choice.text is None
    assert choice.finish_reason == "tool_calls"
    [call] = choice.tool_calls
    assert (call.id, call.name) == ("toolu_01A9HHF5Ezy3oBrKmSgfASm9", "get_weather")
    assert json.loads(call.arguments) == {"location": "San Francisco, CA", "units": "f"}
    assert resp.usage == Usage(656, 74, 0)


def test_parallel_tool_use_response_keeps_text_and_order() -> None:
    resp = chat_response(fixture("messages-response-parallel-tool-use.json"), created=0)
    [choice] = resp.choices
    assert choice.text is not None and choice.text.startswith("I'll help you find out who is the youngest")
    assert [json.loads(c.arguments)["name"] for c in choice.tool_calls] == ["Alice", "Bob", "Charlie", "Daisy"]
    assert choice.tool_calls[3].id == "toolu_013mnQZbgtK2oe3Mo3XKJsx3"
    assert choice.finish_reason == "tool_calls"
    assert resp.usage == Usage(423, 202, 0)


def test_cache_usage_counts_reads_and_writes_as_input() -> None:
    resp = chat_response(fixture("messages-response-cache-usage.json"), created=0)
    assert resp.usage == Usage(input_tokens=3 + 418 + 1111, output_tokens=33, cached_input_tokens=1111)


def test_minimal_docs_response() -> None:
    resp = chat_response(fixture("messages-response-minimal.docs.json"), created=0)
    assert resp.choices[0].text == "Hi! My name is Claude."
    assert resp.usage == Usage(2095, 503, 0)


def test_json_tool_answer_becomes_text_content() -> None:
    data = fixture("messages-response-tool-use.json")
    resp = chat_response(data, created=0, json_tool="get_weather")
    [choice] = resp.choices
    assert choice.tool_calls == []
    assert choice.text is not None
    assert json.loads(choice.text) == {"location": "San Francisco, CA", "units": "f"}
    assert choice.finish_reason == "stop"


@pytest.mark.parametrize(("stop", "expected"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("pause_turn", "stop"), (None, "stop"), ("something_new", "stop"),
])
def test_finish_reasons(stop: str | None, expected: str) -> None:
    assert finish_reason(stop) == expected


def test_usage_tolerates_missing_fields() -> None:
    assert usage(None) == Usage()
    assert usage({"output_tokens": 4}) == Usage(0, 4, 0)


def test_thinking_blocks_are_left_out() -> None:
    data = {"id": "msg_1", "model": "m", "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 2},
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "x"},
                        {"type": "text", "text": "42"}]}
    assert chat_response(data, created=0).choices[0].text == "42"


@pytest.mark.parametrize("data", [None, [], {"type": "message"}, {"content": "text"}])
def test_unexpected_body_is_an_upstream_error(data: Any) -> None:
    with pytest.raises(UpstreamError):
        chat_response(data, created=0)


# --- streams -----------------------------------------------------------------------------------------


def test_stream_text() -> None:
    events = decode_file("messages-stream-text.sse.txt")
    assert text_of(events) == (
        "The weather in San Francisco, CA is currently:\n- **Temperature:** 68\u00b0F\n- **Condition:** Sunny"
        "\n\nIt's a nice sunny day!"
    )
    assert all(isinstance(e, TextDelta) for e in events[:-2])
    assert len(events) == 9 + 2  # one TextDelta per text_delta, as they arrive
    assert tail(events) == ("stop", Usage(770, 38, 0))


def test_stream_basic_with_padded_events() -> None:
    events = decode_file("messages-stream-basic.sse.txt")
    assert text_of(events) == "2"
    assert tail(events) == ("stop", Usage(20, 5, 0))


def test_stream_basic_docs() -> None:
    events = decode_file("messages-stream-basic.docs.sse.txt")
    assert text_of(events) == "Hello!"
    assert tail(events) == ("stop", Usage(25, 15, 0))


def test_stream_tool_use() -> None:
    events = decode_file("messages-stream-tool-use.sse.txt")
    calls = tool_calls(events)
    assert list(calls) == [0]
    assert calls[0]["id"] == "toolu_018acGYLtfR52q9yDbWaEdQZ"
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"location": "San Francisco, CA", "units": "f"}
    first = events[0]
    assert isinstance(first, ToolCallDelta) and first.arguments == "" and first.id is not None
    assert text_of(events) == ""
    assert tail(events) == ("tool_calls", Usage(656, 74, 0))


def test_stream_text_then_tool_use_counts_tool_calls_not_blocks() -> None:
    events = decode_file("messages-stream-text-then-tool-use.sse.txt")
    assert text_of(events) == "I'll check the current weather in Paris for you."
    calls = tool_calls(events)
    assert list(calls) == [0]  # content block 1 is the first tool call
    assert calls[0]["id"] == "toolu_01NRLabsLyVHZPKxbKvkfSMn"
    assert json.loads(calls[0]["arguments"]) == {"location": "Paris"}
    assert tail(events) == ("tool_calls", Usage(377, 65, 0))


def test_stream_tool_use_docs() -> None:
    events = decode_file("messages-stream-tool-use.docs.sse.txt")
    assert text_of(events) == "Okay, let's check the weather for San Francisco, CA:"
    calls = tool_calls(events)
    assert calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
    assert json.loads(calls[0]["arguments"]) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert tail(events) == ("tool_calls", Usage(472, 89, 0))


def test_stream_max_tokens_inside_tool_input() -> None:
    events = decode_file("messages-stream-max-tokens-partial-json.sse.txt")
    calls = tool_calls(events)
    assert calls[0]["name"] == "make_file"
    assert calls[0]["arguments"].startswith('{"filename": "taxes.txt", "lines_of_text": [')
    assert calls[0]["arguments"].endswith('\n"Filing taxes')
    assert tail(events) == ("length", Usage(450, 124, 0))


def test_stream_thinking_is_left_out() -> None:
    events = decode_file("messages-stream-thinking.docs.sse.txt")
    assert text_of(events) == "27 * 453 = 12,231"
    assert tail(events) == ("stop", Usage())


def test_stream_json_tool_becomes_text() -> None:
    events = decode_file("messages-stream-tool-use.sse.txt", json_tool="get_weather")
    assert not any(isinstance(e, ToolCallDelta) for e in events)
    assert json.loads(text_of(events)) == {"location": "San Francisco, CA", "units": "f"}
    assert tail(events)[0] == "stop"


def test_stream_error_event_is_raised() -> None:
    payloads = sse_payloads((WIRE / "messages-stream-error-event.docs.sse.txt").read_bytes())
    with pytest.raises(UpstreamError) as exc:
        decode(payloads)
    assert exc.value.status_code == 502
    assert exc.value.retryable
    assert "overloaded_error" in exc.value.message


def test_stream_error_event_after_text() -> None:
    payloads = sse_payloads((WIRE / "messages-stream-text.sse.txt").read_bytes())[:4]
    payloads.append({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}})
    decoder = StreamDecoder("p")
    assert text_of(decoder.feed(payloads[3])) == ""  # a delta for a block not yet started is ignored
    decoder = StreamDecoder("p")
    seen: list[StreamEvent] = []
    with pytest.raises(UpstreamError):
        for p in payloads:
            seen += decoder.feed(p)
    assert text_of(seen) == "The weather in San Francisco, CA is"


@pytest.mark.parametrize(("kind", "status", "cls"), [
    ("rate_limit_error", 429, UpstreamRateLimited),
    ("invalid_request_error", 400, UpstreamRejected),
    ("authentication_error", 502, UpstreamError),
    ("overloaded_error", 502, UpstreamError),
    ("timeout_error", 502, UpstreamError),
])
def test_stream_error_event_mapping(kind: str, status: int, cls: type[Exception]) -> None:
    event = {"type": "error", "error": {"type": kind, "message": "secret sk-ant-123 detail"}}
    with pytest.raises(cls) as exc:
        StreamDecoder("p").feed(event)
    err = exc.value
    assert getattr(err, "status_code", None) == status
    if status == 502:  # bad credentials and server failures never carry the provider's wording
        assert "sk-ant" not in str(err)


def test_stream_without_message_stop_fails() -> None:
    payloads = sse_payloads((WIRE / "messages-stream-text.sse.txt").read_bytes())
    assert payloads[-1]["type"] == "message_stop"
    decoder = StreamDecoder("p")
    events = [ev for p in payloads[:-1] for ev in decoder.feed(p)]
    assert not any(isinstance(e, UsageDelta) for e in events)
    with pytest.raises(UpstreamError, match="ended the stream early"):
        decoder.close()


def test_stream_usage_counts_cache_from_message_start() -> None:
    payloads: list[Any] = [
        {"type": "message_start", "message": {"id": "msg_x", "model": "m", "content": [], "usage": {
            "input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20,
            "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "some_future_event", "foo": 1},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    ]
    decoder = StreamDecoder("p")
    events = [ev for p in payloads for ev in decoder.feed(p)]
    decoder.close()
    assert (decoder.message_id, decoder.model) == ("msg_x", "m")
    assert tail(events) == ("stop", Usage(input_tokens=130, output_tokens=7, cached_input_tokens=100))


def test_stream_finish_is_emitted_even_without_a_stop_reason() -> None:
    events = decode([{"type": "message_start", "message": {"usage": {"input_tokens": 1, "output_tokens": 1}}},
                     {"type": "message_stop"}])
    assert tail(events) == ("stop", Usage(1, 1, 0))
