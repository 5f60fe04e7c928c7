"""The ``/v1/messages`` dialect's translators, against the recorded Messages
API examples in tests/fixtures/wire/anthropic: requests decode into canonical form
(and, sent on to an Anthropic deployment, come out as they went in); answers
encode into Anthropic's message and event-stream shapes."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import orjson
import pytest

from llm_gateway.cache.keys import cache_key
from llm_gateway.errors import InvalidRequest, UpstreamError
from llm_gateway.types import (
    ChatResponse,
    Choice,
    FinishDelta,
    ImagePart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from llm_gateway.wire.answer import Answer, Piece
from llm_gateway.wire.anthropic.decode import decode_messages_request
from llm_gateway.wire.anthropic.encode import MessageStreamEncoder, encode_message
from llm_gateway.wire.anthropic.to_wire import messages_body
from tests import fixtures

WIRE = fixtures.WIRE / "anthropic"


def fixture(name: str) -> Any:
    return json.loads((WIRE / name).read_text())


def sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in raw.decode().strip().split("\n\n"):
        name, data = frame.split("\n", 1)
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


def test_a_full_request_becomes_canonical() -> None:
    req = decode_messages_request(fixture("messages-request-full.assembled.json"))
    assert [m.role for m in req.messages] == ["system", "user", "assistant", "tool"]
    assert req.messages[0].text == "You are a weather assistant."
    assistant = req.messages[2]
    assert assistant.text == "I'll check the current weather in San Francisco for you."
    assert [(c.id, c.name, json.loads(c.arguments)) for c in assistant.tool_calls] == [
        ("toolu_01A9HHF5Ezy3oBrKmSgfASm9", "get_weather", {"location": "San Francisco, CA", "units": "f"})]
    assert req.messages[3].tool_call_id == "toolu_01A9HHF5Ezy3oBrKmSgfASm9"
    assert req.messages[3].text == '{"temperature": "68F", "condition": "Sunny"}'
    assert req.tools is not None and req.tools[0].name == "get_weather"
    assert req.tools[0].parameters == fixture("messages-request-full.assembled.json")["tools"][0]["input_schema"]
    assert req.tool_choice is not None and req.tool_choice.mode == "auto"
    assert (req.max_tokens, req.temperature, req.stop, req.user, req.stream) == (
        1024, 0.5, ["\n\nHuman:"], "user-1234", False)
    assert req.include_usage and req.origin is not None and req.origin.dialect == "anthropic.messages"


@pytest.mark.parametrize("name", [
    "messages-request-full.assembled.json", "messages-request-tools.json", "messages-request-system-tools.json",
    "messages-request-parallel-tool-results.json", "messages-request-tool-result-is-error.json",
    "messages-stream-request-tools.json", "messages-stream-request-tool-result.json",
])
def test_sent_on_to_anthropic_a_request_keeps_its_meaning(name: str) -> None:
    original = fixture(name)
    req = decode_messages_request(original)
    body = messages_body(req, original["model"], 4096).body

    def turns(messages: list[dict[str, Any]]) -> list[Any]:
        out = []
        for m in messages:
            blocks = [{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"]
            out.append((m["role"], [(b["type"], b.get("text"), b.get("id") or b.get("tool_use_id"),
                                     b.get("input")) for b in blocks]))
        return out

    assert turns(body["messages"]) == turns(original["messages"])
    assert [t["name"] for t in body.get("tools", [])] == [t["name"] for t in original.get("tools", [])]
    assert [t["input_schema"] for t in body.get("tools", [])] == [
        t["input_schema"] for t in original.get("tools", [])]
    assert body["max_tokens"] == original["max_tokens"]
    system = original.get("system")
    if isinstance(system, list):
        system = "\n\n".join(b["text"] for b in system)
    assert body.get("system") == system
    assert body.get("stream", False) == original.get("stream", False)


def test_parallel_tool_results_become_one_tool_message_each() -> None:
    req = decode_messages_request(fixture("messages-request-parallel-tool-results.json"))
    results = [m for m in req.messages if m.role == "tool"]
    assert len(results) == 4 and len({m.tool_call_id for m in results}) == 4
    calls = [c.id for m in req.messages for c in m.tool_calls]
    assert [m.tool_call_id for m in results] == calls


def test_images_and_tool_choices() -> None:
    req = decode_messages_request({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "text", "text": "what?", "cache_control": {"type": "ephemeral"}},
    ]}], "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True}, "top_k": 5,
        "thinking": {"type": "disabled"}})
    parts = req.messages[0].content
    assert isinstance(parts[0], ImagePart) and parts[0].url == "data:image/png;base64,AAAA"
    assert isinstance(parts[1], ImagePart) and parts[1].url == "https://example.com/a.png"
    assert req.tool_choice is not None and req.tool_choice.mode == "required"
    assert req.parallel_tool_calls is False
    named = decode_messages_request({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                     "tools": [{"name": "f", "input_schema": {}}],
                                     "tool_choice": {"type": "tool", "name": "f"}})
    assert named.tool_choice is not None and (named.tool_choice.mode, named.tool_choice.name) == ("named", "f")


def test_thinking_blocks_of_earlier_turns_are_dropped() -> None:
    req = decode_messages_request({"model": "m", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                          {"type": "text", "text": "y"}]},
        {"role": "user", "content": "z"}]})
    assert [(m.role, m.text) for m in req.messages] == [("user", "x"), ("assistant", "y"), ("user", "z")]


def test_the_cache_keys_on_what_changes_the_answer() -> None:
    base = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}

    def key(body: dict[str, Any]) -> str:
        endpoint, basis = decode_messages_request(body).cache_source
        assert endpoint == "messages" and basis is not None
        return cache_key(endpoint, basis, "*")

    assert key(base) == key({**base, "stream": True, "metadata": {"user_id": "u"}})
    # An Anthropic deployment gets the whole body, so even its own sampling fields count.
    assert key(base) != key({**base, "top_k": 3}) != key({**base, "max_tokens": 11})
    assert key(base) != cache_key("chat", {"model": "m", "max_tokens": 10,
                                           "messages": [{"role": "user", "content": "x"}]}, "*")


@pytest.mark.parametrize(("body", "param"), [
    ([], None),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0].type"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
    ({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "tool_use", "id": "a", "name": "f", "input": {}}]}]}, "messages[0].content[0].type"),
    ({"model": "m", "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "a", "name": "f", "input": "x"}]}]}, "messages[0].content[0].input"),
    ({"model": "m", "messages": [{"role": "assistant", "content": [
        {"type": "tool_result", "tool_use_id": "a", "content": "x"}]}]}, "messages[0].content[0].type"),
    ({"model": "m", "system": [{"type": "image", "source": {"type": "url", "url": "u"}}],
      "messages": [{"role": "user", "content": "x"}]}, "system"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop_sequences": "x"}, "stop_sequences"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "some"}},
     "tool_choice.type"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"name": "f"}]},
     "tools[0].input_schema"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}],
      "output_config": {"format": {"type": "json_object"}}}, "output_config.format.type"),
])
def test_bad_requests_are_refused_naming_the_field(body: Any, param: str | None) -> None:
    with pytest.raises(InvalidRequest) as err:
        decode_messages_request(body)
    assert err.value.param == param


@pytest.mark.parametrize(("extra", "param"), [
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "data": "d"}},
                                                {"type": "text", "text": "sum up"}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     "messages[0].content[0].source.type"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}, {"name": "f", "input_schema": {}}]},
     "tools[0].type"),
    ({"mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": "x"}]}, "mcp_servers"),
])
def test_what_only_anthropic_takes_is_kept_for_it_and_noted(extra: dict[str, Any], param: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}
    req = decode_messages_request(body)
    assert req.origin is not None and req.origin.body == body and req.origin.only is not None
    assert req.origin.only[0] == param
    assert all(t.name == "f" for t in req.tools or [])  # the canonical form keeps what it can carry


def _answer(text: str | None, calls: list[ToolCall], finish: Any, usage: Usage) -> Answer:
    return Answer.of(ChatResponse("chatcmpl-1", "gpt-x", 0, [Choice(0, text, calls, finish)], usage))


def test_an_answer_with_a_tool_call_has_the_message_shape() -> None:
    expected = fixture("messages-response-tool-use.json")
    call = expected["content"][0]
    got = encode_message(_answer(None, [ToolCall(call["id"], call["name"], json.dumps(call["input"]))],
                                 "tool_calls", Usage(656, 74)), "rid", "claude-haiku-4-5")
    assert got["id"] == "msg_rid" and got["model"] == "gpt-x"
    assert {k: got[k] for k in ("type", "role", "stop_reason", "stop_sequence")} == {
        k: expected[k] for k in ("type", "role", "stop_reason", "stop_sequence")}
    assert got["content"] == [{k: call[k] for k in ("type", "id", "name", "input")}]
    assert {k: got["usage"][k] for k in ("input_tokens", "output_tokens", "cache_read_input_tokens")} == {
        k: expected["usage"][k] for k in ("input_tokens", "output_tokens", "cache_read_input_tokens")}
    anthropic.types.Message.model_validate(got)


def test_usage_splits_cached_tokens_and_finish_reasons_map() -> None:
    got = encode_message(_answer("hi", [], "length", Usage(100, 7, cached_input_tokens=60)), "r", "m")
    assert got["usage"] == {"input_tokens": 40, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 60,
                            "output_tokens": 7}
    assert got["stop_reason"] == "max_tokens" and got["content"] == [{"type": "text", "text": "hi"}]
    assert encode_message(_answer("no", [], "content_filter", Usage()), "r", "m")["stop_reason"] == "refusal"
    odd = encode_message(_answer(None, [ToolCall("c", "f", "not json")], "tool_calls", Usage()), "r", "m")
    assert odd["content"][0]["input"] == {"arguments": "not json"}


def test_a_stored_openai_answer_reads_back() -> None:
    body = orjson.dumps({"id": "chatcmpl-9", "object": "chat.completion", "created": 1, "model": "gpt-x",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "cached"},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})
    got = encode_message(Answer.passed(body, "openai.chat", Usage(5, 1)), "r", "m")
    assert got["content"] == [{"type": "text", "text": "cached"}] and got["usage"]["output_tokens"] == 1
    with pytest.raises(UpstreamError):
        encode_message(Answer.passed(b'{"no": "choices"}', "openai.chat", None), "r", "m")


def test_a_stream_follows_anthropics_event_sequence() -> None:
    recorded = [(name, data) for name, data in sse((WIRE / "messages-stream-text-then-tool-use.sse.txt").read_bytes())
                if name != "ping"]
    encoder = MessageStreamEncoder("msg_1", "gpt-x")
    out = encoder.start()
    for event in [TextDelta("I"), TextDelta("'ll check the current weather in Paris for you."),
                  ToolCallDelta(0, id="toolu_01NRLabsLyVHZPKxbKvkfSMn", name="get_weather"),
                  ToolCallDelta(0, arguments='{"locati'), ToolCallDelta(0, arguments='on": "Paris"}'),
                  FinishDelta("tool_calls"), UsageDelta(Usage(377, 65))]:
        out += encoder.encode(Piece.of(event))
    out += encoder.finish()
    ours = sse(out)
    kinds = [(n, d.get("index"), (d.get("delta") or d.get("content_block") or {}).get("type")) for n, d in ours]
    theirs = [(n, d.get("index"), (d.get("delta") or d.get("content_block") or {}).get("type")) for n, d in recorded]
    # The recording opens the tool's input with an empty partial_json and splits it differently.
    assert [k for k in kinds if k[2] != "input_json_delta"] == [k for k in theirs if k[2] != "input_json_delta"]
    assert ours[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert ours[-2][1]["usage"]["output_tokens"] == 65 and ours[-2][1]["usage"]["input_tokens"] == 377


def test_the_sdk_assembles_our_stream() -> None:
    encoder = MessageStreamEncoder("msg_1", "gpt-x")
    raw = encoder.start() + b"".join(encoder.encode(Piece.of(e)) for e in [
        TextDelta("Hello "), TextDelta("there"),
        ToolCallDelta(0, id="call_1", name="lookup", arguments='{"q": '), ToolCallDelta(0, arguments='"x"}'),
        ToolCallDelta(1, id="call_2", name="other", arguments="{}"),
        FinishDelta("tool_calls"), UsageDelta(Usage(20, 9, cached_input_tokens=4))]) + encoder.finish()
    transport = httpx2.MockTransport(lambda request: httpx2.Response(
        200, content=raw, headers={"content-type": "text/event-stream"}))
    client = anthropic.Anthropic(api_key="k", base_url="http://gw", http_client=httpx2.Client(transport=transport))
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[0].text == "Hello there"  # type: ignore[union-attr]
    assert final.content[1].input == {"q": "x"} and final.content[2].input == {}  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (16, 4, 9)


def test_cached_chunks_and_other_choices() -> None:
    encoder = MessageStreamEncoder("msg_1", "gpt-x")
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
             "choices": [{"index": 0, "delta": {"content": "from cache"}, "finish_reason": None}]}
    assert b"from cache" in encoder.encode(Piece(orjson.dumps(chunk), "openai.chat"))
    assert encoder.encode(Piece.of(TextDelta("second choice", index=1))) == b""
    assert encoder.encode(Piece(None, "openai.chat")) == b""
