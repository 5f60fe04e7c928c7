"""Gemini translation from the recorded wire examples in tests/fixtures/wire/gemini."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from llm_gateway.errors import InvalidRequest, UpstreamError, UpstreamRateLimited, UpstreamRejected
from llm_gateway.providers.gemini import errors as gemini_errors
from llm_gateway.providers.http import iter_sse
from llm_gateway.types import (
    ChatRequest,
    EmbeddingRequest,
    FinishDelta,
    ImagePart,
    Message,
    OtherPart,
    ResponseFormat,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageDelta,
)
from llm_gateway.wire.gemini import from_wire, to_wire
from llm_gateway.wire.gemini.stream import StreamDecoder
from llm_gateway.wire.gemini.tool_ids import new_call_id, signature_of
from tests import fixtures

WIRE = fixtures.WIRE / "gemini"


def load(name: str) -> Any:
    return orjson.loads((WIRE / name).read_bytes())


def sse_payloads(name: str) -> list[Any]:
    """The fixture's SSE data payloads, parsed by the gateway's own SSE reader."""

    async def lines() -> AsyncIterator[bytes]:
        for line in (WIRE / name).read_bytes().splitlines(keepends=True):
            yield line

    async def collect() -> list[Any]:
        return [orjson.loads(e.data) async for e in iter_sse(lines())]  # type: ignore[arg-type]

    return asyncio.run(collect())


def decode(payloads: list[Any]) -> list[StreamEvent]:
    decoder = StreamDecoder()
    events: list[StreamEvent] = []
    for p in payloads:
        events.extend(decoder.feed(p))
    return events + decoder.close()


def user(text: str) -> Message:
    return Message("user", [TextPart(text)])


def strip_ids(contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop what the gateway does not send (call ids) or adds (signatures)."""
    out = []
    for c in contents:
        parts = []
        for p in c["parts"]:
            p = {k: v for k, v in p.items() if k != "thoughtSignature"}
            for key in ("functionCall", "functionResponse"):
                if key in p:
                    p[key] = {k: v for k, v in p[key].items() if k != "id"}
            parts.append(p)
        out.append({"role": c["role"], "parts": parts})
    return out


# --- responses -------------------------------------------------------------


def test_text_response() -> None:
    resp = from_wire.chat_response(load("generateContent-response-text.json"), "gemini-x")
    assert len(resp.choices) == 1
    c = resp.choices[0]
    assert c.text == (
        "Google's headquarters, also known as the Googleplex, is located in **Mountain View, California**.\n"
    )
    assert c.finish_reason == "stop" and c.tool_calls == []
    assert resp.usage == Usage(input_tokens=7, output_tokens=22)
    assert resp.model == "gemini-2.0-flash"


def test_text_response_counts_thoughts_as_output() -> None:
    resp = from_wire.chat_response(load("generateContent-response-text.real.json"), "gemini-x")
    assert resp.choices[0].text == "Hello! How can I help you today?"
    assert resp.usage == Usage(input_tokens=9, output_tokens=9 + 34, cached_input_tokens=0, reasoning_tokens=34)
    assert resp.id == "chatcmpl-bzlXaa_EE_aHqtsPi_zw8Ao"


def test_function_call_responses() -> None:
    first = from_wire.chat_response(load("generateContent-response-function-call.json"), "m").choices[0]
    assert first.finish_reason == "tool_calls"
    assert first.text is None
    assert [(t.name, orjson.loads(t.arguments)) for t in first.tool_calls] == [("get_user_country", {})]
    assert first.tool_calls[0].id.startswith("call_")
    second = from_wire.chat_response(load("generateContent-response-function-call-2.json"), "m").choices[0]
    assert orjson.loads(second.tool_calls[0].arguments) == {"city": "Mexico City", "country": "Mexico"}
    ids = {first.tool_calls[0].id, second.tool_calls[0].id}
    assert len(ids) == 2


def test_thinking_function_call_skips_thought_and_keeps_signature() -> None:
    data = load("generateContent-response-thinking-function-call.json")
    resp = from_wire.chat_response(data, "m")
    c = resp.choices[0]
    assert c.text is None  # the thought part is not answer text
    assert [t.name for t in c.tool_calls] == ["now"]
    sent = data["candidates"][0]["content"]["parts"][1]["thoughtSignature"]
    carried = signature_of(c.tool_calls[0].id)
    assert carried is not None
    assert base64.urlsafe_b64decode(carried + "==") == base64.b64decode(sent)
    assert resp.usage == Usage(input_tokens=38, output_tokens=8 + 501, reasoning_tokens=501)


def test_safety_finish_is_content_filter() -> None:
    c = from_wire.chat_response(load("generateContent-response-finish-safety.json"), "m").choices[0]
    assert c.finish_reason == "content_filter"
    assert c.text == "Safety error incoming in 5, 4, 3, 2..."


@pytest.mark.parametrize(
    ("raw", "calls", "expected"),
    [("STOP", False, "stop"), ("STOP", True, "tool_calls"), ("MAX_TOKENS", False, "length"),
     ("SAFETY", False, "content_filter"), ("RECITATION", False, "content_filter"),
     ("BLOCKLIST", False, "content_filter"), ("PROHIBITED_CONTENT", False, "content_filter"),
     ("SPII", True, "content_filter"), ("OTHER", False, "stop")],
)
def test_finish_reasons(raw: str, calls: bool, expected: str) -> None:
    assert from_wire.finish_reason(raw, calls) == expected


def test_blocked_prompt_response_is_empty_content_filter() -> None:
    data = sse_payloads("streamGenerateContent-prompt-blocked.sse.txt")[0]
    c = from_wire.chat_response(data, "m").choices[0]
    assert (c.text, c.finish_reason, c.tool_calls) == ("", "content_filter", [])


def test_cached_tokens_are_part_of_input() -> None:
    u = from_wire.usage({"promptTokenCount": 100, "cachedContentTokenCount": 60, "candidatesTokenCount": 5})
    assert u == Usage(input_tokens=100, output_tokens=5, cached_input_tokens=60)


def test_response_without_candidates_is_upstream_error() -> None:
    with pytest.raises(UpstreamError):
        from_wire.chat_response({"usageMetadata": {}}, "m")


# --- streams ---------------------------------------------------------------


def test_stream_text() -> None:
    events = decode(sse_payloads("streamGenerateContent-text.sse.txt"))
    assert events == [
        TextDelta("The"), TextDelta(" capital of Wyoming"), TextDelta(" is **Cheyenne**.\n"),
        FinishDelta("stop"), UsageDelta(Usage(input_tokens=7, output_tokens=10)),
    ]


def test_stream_usage_is_the_last_seen() -> None:
    events = decode(sse_payloads("streamGenerateContent-text-after-function-response.real.sse.txt"))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "The capital of Mexico is Mexico City."
    usages = [e for e in events if isinstance(e, UsageDelta)]
    assert usages == [UsageDelta(Usage(input_tokens=257, output_tokens=8))]
    assert events[-1] == usages[0]
    assert [e for e in events if isinstance(e, FinishDelta)] == [FinishDelta("stop")]


def test_stream_function_call() -> None:
    payloads = sse_payloads("streamGenerateContent-function-call.real.sse.txt")
    events = decode(payloads)
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert len(calls) == 1
    call = calls[0]
    assert (call.tool_index, call.name, call.arguments, call.index) == (0, "get_country", "{}", 0)
    assert call.id is not None and signature_of(call.id) is not None
    assert not [e for e in events if isinstance(e, TextDelta)]  # the empty text is not sent
    assert [e for e in events if isinstance(e, FinishDelta)] == [FinishDelta("tool_calls")]
    assert events[-1] == UsageDelta(Usage(input_tokens=29, output_tokens=10 + 202, reasoning_tokens=202))


def test_stream_thinking_parts_are_skipped() -> None:
    events = decode(sse_payloads("streamGenerateContent-thinking-function-call.sse.txt"))
    assert not [e for e in events if isinstance(e, TextDelta)]
    assert [e.name for e in events if isinstance(e, ToolCallDelta)] == ["now"]
    assert events[-2:] == [
        FinishDelta("tool_calls"), UsageDelta(Usage(input_tokens=38, output_tokens=6 + 168, reasoning_tokens=168)),
    ]


def test_stream_prompt_blocked() -> None:
    assert decode(sse_payloads("streamGenerateContent-prompt-blocked.sse.txt")) == [FinishDelta("content_filter")]


def test_stream_ended_early_raises() -> None:
    payloads = sse_payloads("streamGenerateContent-text.sse.txt")[:2]
    decoder = StreamDecoder("gem")
    for p in payloads:
        decoder.feed(p)
    with pytest.raises(UpstreamError, match="ended the stream early"):
        decoder.close()


def test_stream_finish_is_emitted_once_per_candidate() -> None:
    chunk = {"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP", "index": 0},
                            {"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS", "index": 1}]}
    decoder = StreamDecoder()
    events = decoder.feed(chunk) + decoder.feed(chunk)
    assert events == [TextDelta("a", 0), FinishDelta("stop", 0), TextDelta("b", 1), FinishDelta("length", 1)]


# --- requests --------------------------------------------------------------


def test_full_request_matches_fixture_shape() -> None:
    fixture = load("generateContent-request-full.assembled.json")
    decl = fixture["tools"][0]["functionDeclarations"][0]
    args = fixture["contents"][1]["parts"][0]["functionCall"]["args"]
    result = fixture["contents"][2]["parts"][0]["functionResponse"]["response"]
    req = ChatRequest(
        model="gemini-x",
        messages=[
            Message("system", [TextPart("You are a helpful movie assistant.")]),
            user(fixture["contents"][0]["parts"][0]["text"]),
            Message("assistant", tool_calls=[ToolCall("call_1", "find_theaters", orjson.dumps(args).decode())]),
            Message("tool", [TextPart(orjson.dumps(result).decode())], tool_call_id="call_1"),
        ],
        temperature=0.7, top_p=0.95, max_tokens=1024, n=1, stop=["END"], user="someone",
        tools=[Tool("find_theaters", decl["description"], {"type": "object", "properties": {}})],
        tool_choice=ToolChoice("auto"),
    )
    body = to_wire.chat_body(req)
    assert body["systemInstruction"] == fixture["systemInstruction"]
    assert strip_ids(body["contents"]) == fixture["contents"]
    assert body["toolConfig"] == fixture["toolConfig"]
    expected = {k: fixture["generationConfig"][k]
                for k in ("temperature", "topP", "maxOutputTokens", "candidateCount", "stopSequences")}
    assert body["generationConfig"] == expected
    assert b"someone" not in orjson.dumps(body)  # ``user`` is not sent


def test_function_response_request_matches_recorded_request() -> None:
    fixture = load("generateContent-request-function-response.json")
    req = ChatRequest(
        model="gemini-2.0-flash",
        messages=[
            user("What is the largest city in the user country?"),
            Message("assistant", tool_calls=[ToolCall("pyd_ai_3fa5", "get_user_country", "{}")]),
            Message("tool", [TextPart('{"return_value": "Mexico"}')], tool_call_id="pyd_ai_3fa5"),
        ],
        tools=[Tool("get_user_country", "", {"properties": {}, "type": "object"}),
               Tool("final_result", "The final response which ends this conversation",
                    {"properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                     "required": ["city", "country"], "type": "object"})],
        tool_choice=ToolChoice("required"),
    )
    body = to_wire.chat_body(req)
    assert strip_ids(body["contents"]) == strip_ids(fixture["contents"])
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    names = [d["name"] for d in body["tools"][0]["functionDeclarations"]]
    assert names == [d["name"] for d in fixture["tools"][0]["functionDeclarations"]]
    # A call the gateway did not produce gets Google's documented placeholder signature.
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == to_wire.DUMMY_SIGNATURE


def test_tools_use_json_schema_as_recorded() -> None:
    fixture = load("streamGenerateContent-request-tools.json")
    schema = fixture["tools"][0]["functionDeclarations"][0]["parameters_json_schema"]
    req = ChatRequest("m", [user("What is the capital of the user country? Call the tool")],
                      tools=[Tool("get_country", None, {"$schema": "https://json-schema.org/draft/2020-12/schema",
                                                        **schema}, strict=True)])
    body = to_wire.chat_body(req)
    assert body["tools"] == [{"functionDeclarations": [{"name": "get_country", "parametersJsonSchema": schema}]}]
    assert body["contents"] == fixture["contents"]
    assert "toolConfig" not in body


def test_thought_signature_round_trips_as_recorded() -> None:
    """The id the gateway gives a streamed call brings its signature back in
    the next request, as python-genai sent it (base64url)."""
    events = decode(sse_payloads("streamGenerateContent-function-call.real.sse.txt"))
    call = next(e for e in events if isinstance(e, ToolCallDelta))
    assert call.id is not None and call.name is not None
    fixture = load("streamGenerateContent-request-function-response.json")
    req = ChatRequest("gemini-3-pro-preview", [
        user("What is the capital of the user country? Call the tool"),
        Message("assistant", tool_calls=[ToolCall(call.id, call.name, call.arguments)]),
        Message("tool", [TextPart('{"return_value": "Mexico"}')], tool_call_id=call.id),
    ])
    body = to_wire.chat_body(req)
    sent = body["contents"][1]["parts"][0]["thoughtSignature"]
    recorded = fixture["contents"][1]["parts"][0]["thoughtSignature"]
    assert sent == recorded.rstrip("=")
    assert strip_ids(body["contents"]) == strip_ids(fixture["contents"])


def test_system_developer_joined_and_turns_merged() -> None:
    req = ChatRequest("m", [
        Message("system", [TextPart("Be brief.")]),
        Message("system", [TextPart("Answer in French.")]),  # a developer message decodes to system
        user("Hi"), user("there"),
        Message("assistant", [TextPart("Bonjour")]),
        Message("assistant", [TextPart("!")]),
        Message("assistant", []),  # nothing to send
        user("Again"),
    ])
    body = to_wire.chat_body(req)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief.\n\nAnswer in French."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Hi"}, {"text": "there"}]},
        {"role": "model", "parts": [{"text": "Bonjour"}, {"text": "!"}]},
        {"role": "user", "parts": [{"text": "Again"}]},
    ]


def test_parallel_tool_results_share_one_user_turn() -> None:
    req = ChatRequest("m", [
        user("Weather in Paris and Rome?"),
        Message("assistant", [TextPart("Checking.")], tool_calls=[
            ToolCall("a", "weather", '{"city": "Paris"}'), ToolCall("b", "weather", '{"city": "Rome"}')]),
        Message("tool", [TextPart("sunny")], tool_call_id="a"),
        Message("tool", [TextPart("[1, 2]")], tool_call_id="b"),
    ])
    contents = to_wire.chat_body(req)["contents"]
    assert contents[1] == {"role": "model", "parts": [
        {"text": "Checking."},
        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": to_wire.DUMMY_SIGNATURE},
        {"functionCall": {"name": "weather", "args": {"city": "Rome"}}},
    ]}
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "weather", "response": {"result": "sunny"}}},
        {"functionResponse": {"name": "weather", "response": {"result": "[1, 2]"}}},
    ]}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [(ToolChoice("auto"), {"mode": "AUTO"}), (ToolChoice("none"), {"mode": "NONE"}),
     (ToolChoice("required"), {"mode": "ANY"}),
     (ToolChoice("named", "b"), {"mode": "ANY", "allowedFunctionNames": ["b"]})],
)
def test_tool_choice(choice: ToolChoice, expected: dict[str, Any]) -> None:
    req = ChatRequest("m", [user("x")], tools=[Tool("a"), Tool("b")], tool_choice=choice)
    assert to_wire.chat_body(req)["toolConfig"] == {"functionCallingConfig": expected}


def test_response_formats() -> None:
    schema = {"$schema": "x", "type": "object", "properties": {"a": {"type": "string"}},
              "required": ["a"], "additionalProperties": False}
    js = to_wire.chat_body(ChatRequest("m", [user("x")], response_format=ResponseFormat(
        "json_schema", "out", schema, True)))["generationConfig"]
    assert js == {"responseMimeType": "application/json",
                  "responseJsonSchema": {k: v for k, v in schema.items() if k != "$schema"}}
    jo = to_wire.chat_body(ChatRequest("m", [user("x")], response_format=ResponseFormat("json_object")))
    assert jo["generationConfig"] == {"responseMimeType": "application/json"}
    text = to_wire.chat_body(ChatRequest("m", [user("x")], response_format=ResponseFormat("text")))
    assert "generationConfig" not in text


def test_sampling_parameters() -> None:
    body = to_wire.chat_body(ChatRequest("m", [user("x")], seed=7, n=2, stop=["a", "b"], temperature=0.0,
                                         presence_penalty=0.5, user="u1"))
    assert body["generationConfig"] == {"temperature": 0.0, "stopSequences": ["a", "b"], "seed": 7,
                                        "candidateCount": 2, "presencePenalty": 0.5}
    assert set(body) == {"contents", "generationConfig"}


def test_images() -> None:
    req = ChatRequest("m", [Message("user", [
        TextPart("What is this?"),
        ImagePart("data:image/png;base64,iVBORw0KGgo="),
        ImagePart("https://example.com/cat.jpg"),
    ])])
    assert to_wire.remote_images(req) == [("messages[0].content[2]", "https://example.com/cat.jpg")]
    body = to_wire.chat_body(req, {"https://example.com/cat.jpg": to_wire.InlineImage("image/jpeg", "/9j/")})
    assert body["contents"][0]["parts"] == [
        {"text": "What is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}},
    ]
    with pytest.raises(InvalidRequest) as exc:
        to_wire.chat_body(req)  # a remote image that was not fetched
    assert exc.value.param == "messages[0].content[2]"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([Message("user", [TextPart("x"), OtherPart({"type": "input_audio"})])], "messages[0].content[1]"),
        ([user("x"), Message("assistant", tool_calls=[ToolCall("c", "f", "{not json")])],
         "messages[1].tool_calls[0].function.arguments"),
        ([user("x"), Message("assistant", tool_calls=[ToolCall("c", "f", "[1]")])],
         "messages[1].tool_calls[0].function.arguments"),
        ([user("x"), Message("tool", [TextPart("r")], tool_call_id="nope")], "messages[1].tool_call_id"),
        ([Message("system", [TextPart("only a system message")])], "messages"),
    ],
)
def test_refused_requests(messages: list[Message], param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        to_wire.chat_body(ChatRequest("m", messages))
    assert exc.value.status_code == 400
    assert exc.value.param == param


# --- embeddings ------------------------------------------------------------


def test_embedding_request_matches_recorded_shape() -> None:
    fixture = load("batchEmbedContents-request.json")
    body = to_wire.embedding_body(EmbeddingRequest("m", ["Hello, world!"], dimensions=768),
                                  "gemini-embedding-2-preview")
    expected = {k: v for k, v in fixture["requests"][0].items() if k != "taskType"}
    assert body == {"requests": [expected]}
    two = to_wire.embedding_body(EmbeddingRequest("m", ["a", "b"]), "models/e")
    assert two == {"requests": [{"model": "models/e", "content": {"parts": [{"text": t}]}} for t in "ab"]}


def test_embedding_token_arrays_refused() -> None:
    with pytest.raises(InvalidRequest) as exc:
        to_wire.embedding_body(EmbeddingRequest("m", [[1, 2, 3]]), "e")
    assert exc.value.param == "input"


def test_embedding_response_float_and_base64() -> None:
    data = load("batchEmbedContents-response.json")
    values = data["embeddings"][0]["values"]
    resp = from_wire.embedding_response(data, EmbeddingRequest("m", ["Hello, world!"]), "emb")
    assert resp.vectors == [values] and len(values) == 768
    assert resp.model == "emb" and resp.usage.input_tokens == 4  # estimated: Gemini reports none
    b64 = from_wire.embedding_response(data, EmbeddingRequest("m", ["Hello, world!"], "base64"), "emb")
    raw = base64.b64decode(b64.vectors[0])  # type: ignore[arg-type]
    assert struct.unpack(f"<{len(values)}f", raw) == pytest.approx(values, rel=1e-6)
    with pytest.raises(UpstreamError):
        from_wire.embedding_response(data, EmbeddingRequest("m", ["a", "b"]), "emb")


# --- errors ----------------------------------------------------------------


def test_invalid_key_400_is_a_bad_provider_key() -> None:
    err = gemini_errors.error(400, (WIRE / "error-400-api-key-invalid.json").read_bytes(), {}, "gem")
    assert isinstance(err, UpstreamError) and err.status_code == 502
    assert "credentials" in err.message and "API key not valid" not in err.message and "key1234" not in err.message


@pytest.mark.parametrize(
    ("name", "status", "cls", "provider_message"),
    [("error-403-service-disabled.json", 502, UpstreamError, False),
     ("error-404-model-not-found.json", 404, UpstreamRejected, True),
     ("error-404-embed-model-not-found.json", 404, UpstreamRejected, True),
     ("error-429-resource-exhausted.assembled.json", 429, UpstreamRateLimited, True),
     ("error-500-internal.assembled.json", 502, UpstreamError, False),
     ("error-503-unavailable.assembled.json", 502, UpstreamError, False)],
)
def test_errors(name: str, status: int, cls: type, provider_message: bool) -> None:
    body = (WIRE / name).read_bytes()
    err = gemini_errors.error(orjson.loads(body)["error"]["code"], body, {}, "gem")
    assert isinstance(err, cls) and err.status_code == status
    assert (err.message == orjson.loads(body)["error"]["message"]) is provider_message


def test_429_retry_delay_from_body_or_header() -> None:
    body = (WIRE / "error-429-resource-exhausted.assembled.json").read_bytes()
    assert gemini_errors.error(429, body, {}, "gem").retry_after == 53.0
    assert gemini_errors.error(429, body, {"retry-after": "2"}, "gem").retry_after == 2.0


def test_tool_ids() -> None:
    plain = new_call_id()
    assert plain.startswith("call_") and signature_of(plain) is None
    sig = base64.b64encode(bytes(range(250))).decode()
    carried = signature_of(new_call_id(sig))
    assert carried is not None and "=" not in carried and "+" not in carried and "/" not in carried
    assert base64.urlsafe_b64decode(carried + "==") == bytes(range(250))
    assert signature_of("call_xyz_ts_abc") is None  # not an id the gateway made
    assert signature_of("toolu_01_ts_abc") is None
