"""Canonical requests → Anthropic Messages bodies, checked against the
recorded request shapes in tests/fixtures/wire/anthropic, and the 400s for what
Anthropic cannot do."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from llm_gateway.errors import InvalidRequest
from llm_gateway.types import (
    ChatRequest,
    ImagePart,
    Message,
    OtherPart,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
)
from llm_gateway.wire.anthropic.to_wire import JSON_TOOL, messages_body
from tests import fixtures

WIRE = fixtures.WIRE / "anthropic"


def fixture(name: str) -> Any:
    return json.loads((WIRE / name).read_text())


def user(text: str) -> Message:
    return Message("user", [TextPart(text)])


def body(req: ChatRequest, max_tokens: int = 4096) -> dict[str, Any]:
    return messages_body(req, req.model, max_tokens).body


def collapse(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A recorded body may send one text block as a list; we send a string."""
    out = []
    for m in messages:
        c = m["content"]
        if isinstance(c, list) and len(c) == 1 and c[0]["type"] == "text":
            c = c[0]["text"]
        out.append({**m, "content": c})
    return out


def strip_keys(value: Any, keys: set[str]) -> Any:
    """Drop fields OpenAI's dialect cannot express (``caller``, ``is_error``)."""
    if isinstance(value, dict):
        return {k: strip_keys(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [strip_keys(v, keys) for v in value]
    return value


WEATHER_SCHEMA: dict[str, Any] = {
    "additionalProperties": False,
    "properties": {
        "location": {"description": "The city and state, e.g. San Francisco, CA", "title": "Location",
                     "type": "string"},
        "units": {"description": "Unit for the output, either 'c' for celsius or 'f' for fahrenheit",
                  "enum": ["c", "f"], "title": "Units", "type": "string"},
    },
    "required": ["location", "units"],
    "type": "object",
}
WEATHER = Tool("get_weather", "Lookup the weather for a given city in either celsius or fahrenheit",
               WEATHER_SCHEMA)


def test_minimal_request_matches_docs_example() -> None:
    req = ChatRequest("claude-sonnet-4-20250514", [user("Hello, world")], max_tokens=1024)
    assert body(req) == fixture("messages-request-minimal.docs.json")


def test_tools_request_matches_recorded_body() -> None:
    req = ChatRequest("claude-haiku-4-5", [user("What is the weather in SF?")], max_tokens=1024, tools=[WEATHER])
    assert body(req) == fixture("messages-request-tools.json")


def test_stream_tools_request_matches_recorded_body() -> None:
    req = ChatRequest("claude-haiku-4-5", [user("What is the weather in SF?")], stream=True,
                      max_tokens=1024, tools=[WEATHER])
    assert body(req) == fixture("messages-stream-request-tools.json")


def test_tool_result_conversation_matches_recorded_body() -> None:
    call = ToolCall("toolu_01A9HHF5Ezy3oBrKmSgfASm9", "get_weather",
                    '{"location": "San Francisco, CA", "units": "f"}')
    req = ChatRequest("claude-haiku-4-5", [
        user("What is the weather in SF?"),
        Message("assistant", [], [call]),
        Message("tool", [TextPart("RuntimeError('Unexpected error, try again')")],
                tool_call_id="toolu_01A9HHF5Ezy3oBrKmSgfASm9"),
    ], max_tokens=1024, tools=[WEATHER])
    expected = strip_keys(fixture("messages-request-tool-result-is-error.json"), {"caller", "is_error"})
    assert body(req) == expected


def test_parallel_tool_results_share_one_user_turn() -> None:
    recorded = fixture("messages-request-parallel-tool-results.json")
    names = ["Alice", "Bob", "Charlie", "Daisy"]
    ids = [b["id"] for b in recorded["messages"][1]["content"] if b["type"] == "tool_use"]
    results = [b["content"] for b in recorded["messages"][2]["content"]]
    tool = recorded["tools"][0]
    calls = [ToolCall(i, "retrieve_entity_info", json.dumps({"name": n})) for i, n in zip(ids, names, strict=True)]
    req = ChatRequest("claude-haiku-4-5", [
        Message("system", [TextPart(recorded["system"])]),
        user(recorded["messages"][0]["content"][0]["text"]),
        Message("assistant", [TextPart(recorded["messages"][1]["content"][0]["text"])], calls),
        *[Message("tool", [TextPart(r)], tool_call_id=i) for i, r in zip(ids, results, strict=True)],
    ], max_tokens=4096, tools=[Tool(tool["name"], tool["description"], tool["input_schema"])],
        tool_choice=ToolChoice("auto"))
    expected = strip_keys(recorded, {"is_error", "stream"})
    expected["messages"] = collapse(expected["messages"])
    assert body(req) == expected


def test_full_request_fields_match_assembled_example() -> None:
    recorded = fixture("messages-request-full.assembled.json")
    tool = recorded["tools"][0]
    req = ChatRequest("claude-sonnet-4-5", [
        Message("system", [TextPart("You are a weather assistant.")]),
        user("What is the weather in SF?"),
        Message("assistant", [TextPart("I'll check the current weather in San Francisco for you.")],
                [ToolCall("toolu_01A9HHF5Ezy3oBrKmSgfASm9", "get_weather",
                          '{"location": "San Francisco, CA", "units": "f"}')]),
        Message("tool", [TextPart('{"temperature": "68F", "condition": "Sunny"}')],
                tool_call_id="toolu_01A9HHF5Ezy3oBrKmSgfASm9"),
    ], max_tokens=1024, temperature=0.5, stop=["\n\nHuman:"], user="user-1234", seed=7,
        tools=[Tool(tool["name"], tool["description"], tool["input_schema"])], tool_choice=ToolChoice("auto"))
    got = body(req)
    # cache_control has no OpenAI form, so the system prompt goes as a plain string.
    assert got.pop("system") == recorded.pop("system")[0]["text"]
    recorded.pop("stream")
    assert got == recorded  # and seed is dropped: Anthropic has none


def test_system_and_developer_messages_are_joined_and_hoisted() -> None:
    req = ChatRequest("m", [
        Message("system", [TextPart("Be brief.")]),
        user("hi"),
        Message("system", [TextPart("Answer in French.")]),  # a developer message, mid-conversation
        Message("assistant", [TextPart("Salut")]),
        user("again"),
    ])
    got = body(req)
    assert got["system"] == "Be brief.\n\nAnswer in French."
    assert [m["role"] for m in got["messages"]] == ["user", "assistant", "user"]


def test_no_system_key_without_system_messages() -> None:
    assert "system" not in body(ChatRequest("m", [user("hi")]))


def test_consecutive_turns_of_one_role_are_merged() -> None:
    req = ChatRequest("m", [user("one"), user("two"), Message("assistant", [TextPart("a")]),
                            Message("assistant", [TextPart("b")]), user("three")])
    assert body(req)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "user", "content": "three"},
    ]


def test_tool_results_then_user_text_share_the_user_turn_results_first() -> None:
    req = ChatRequest("m", [
        user("q"),
        Message("assistant", [TextPart("")], [ToolCall("t1", "f", "{}"), ToolCall("t2", "f", "")]),
        Message("tool", [TextPart("r1")], tool_call_id="t1"),
        Message("tool", [TextPart("r2")], tool_call_id="t2"),
        user("and then?"),
    ], tools=[Tool("f")])
    msgs = body(req)["messages"]
    assert msgs[1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
        {"type": "tool_use", "id": "t2", "name": "f", "input": {}},
    ]}  # the empty text part is left out: Anthropic refuses empty text blocks
    assert msgs[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": "r1"},
        {"type": "tool_result", "tool_use_id": "t2", "content": "r2"},
        {"type": "text", "text": "and then?"},
    ]}
    assert len(msgs) == 3


def test_images_become_base64_or_url_sources() -> None:
    req = ChatRequest("m", [Message("user", [
        TextPart("what is this?"),
        ImagePart("data:image/png;base64,iVBORw0KGgo="),
        ImagePart("https://example.com/cat.jpg", detail="high"),
    ])])
    assert body(req)["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_image_with_other_scheme_is_refused() -> None:
    req = ChatRequest("m", [Message("user", [ImagePart("ftp://example.com/cat.jpg")])])
    with pytest.raises(InvalidRequest) as exc:
        body(req)
    assert exc.value.param == "messages[0].content[0]"


def test_other_part_is_refused_naming_it() -> None:
    audio = OtherPart({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}})
    req = ChatRequest("m", [user("hi"), Message("assistant", [TextPart("yes?")]),
                            Message("user", [TextPart("listen"), audio])])
    with pytest.raises(InvalidRequest) as exc:
        body(req)
    assert exc.value.status_code == 400
    assert exc.value.param == "messages[2].content[1]"
    assert "input_audio" in exc.value.message


def test_image_in_system_message_is_refused() -> None:
    req = ChatRequest("m", [Message("system", [ImagePart("https://example.com/a.png")]), user("hi")])
    with pytest.raises(InvalidRequest) as exc:
        body(req)
    assert exc.value.param == "messages[0].content[0]"


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    (ToolChoice("auto"), None, {"type": "auto"}),
    (ToolChoice("none"), None, {"type": "none"}),
    (ToolChoice("required"), None, {"type": "any"}),
    (ToolChoice("named", "f"), None, {"type": "tool", "name": "f"}),
    (ToolChoice("required"), False, {"type": "any", "disable_parallel_tool_use": True}),
    (ToolChoice("named", "f"), False, {"type": "tool", "name": "f", "disable_parallel_tool_use": True}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    (ToolChoice("none"), False, {"type": "none"}),
    (None, None, None),
    (ToolChoice("auto"), True, {"type": "auto"}),
])
def test_tool_choice(choice: ToolChoice | None, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    req = ChatRequest("m", [user("hi")], tools=[Tool("f", "does f", {"type": "object"})], tool_choice=choice,
                      parallel_tool_calls=parallel)
    assert body(req).get("tool_choice") == expected


def test_tool_schema_defaults_to_an_object() -> None:
    req = ChatRequest("m", [user("hi")], tools=[
        Tool("a"), Tool("b", parameters={}), Tool("c", parameters={"properties": {"x": {"type": "string"}}}),
    ])
    assert body(req)["tools"] == [
        {"name": "a", "input_schema": {"type": "object"}},
        {"name": "b", "input_schema": {"type": "object"}},
        {"name": "c", "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}}},
    ]


def test_tool_choice_requiring_a_tool_without_tools_is_refused() -> None:
    with pytest.raises(InvalidRequest) as exc:
        body(ChatRequest("m", [user("hi")], tool_choice=ToolChoice("required")))
    assert exc.value.param == "tool_choice"
    assert "tool_choice" not in body(ChatRequest("m", [user("hi")], tool_choice=ToolChoice("none")))


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"text"'])
def test_tool_call_arguments_must_be_a_json_object(arguments: str) -> None:
    req = ChatRequest("m", [user("hi"), Message("assistant", [], [ToolCall("t", "f", arguments)])])
    with pytest.raises(InvalidRequest) as exc:
        body(req)
    assert exc.value.param == "messages[1].tool_calls[0].function.arguments"


def test_json_schema_is_emulated_with_a_forced_tool() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    req = ChatRequest("m", [user("hi")], response_format=ResponseFormat("json_schema", "Location", schema))
    wire = messages_body(req, "m", 100)
    assert wire.json_tool == JSON_TOOL
    [tool] = wire.body["tools"]
    assert tool["name"] == JSON_TOOL
    assert tool["input_schema"] == schema
    assert "Location" in tool["description"]
    assert wire.body["tool_choice"] == {"type": "tool", "name": JSON_TOOL}


def test_json_object_is_emulated_with_an_open_object_schema() -> None:
    wire = messages_body(ChatRequest("m", [user("hi")], response_format=ResponseFormat("json_object")), "m", 9)
    assert wire.json_tool == JSON_TOOL
    assert wire.body["tools"][0]["input_schema"] == {"type": "object"}
    assert wire.body["tool_choice"] == {"type": "tool", "name": JSON_TOOL}


def test_text_response_format_changes_nothing() -> None:
    wire = messages_body(ChatRequest("m", [user("hi")], response_format=ResponseFormat("text")), "m", 9)
    assert wire.json_tool is None
    assert "tools" not in wire.body


def test_response_format_with_tools_is_refused() -> None:
    req = ChatRequest("m", [user("hi")], tools=[Tool("f")], response_format=ResponseFormat("json_object"))
    with pytest.raises(InvalidRequest) as exc:
        body(req)
    assert exc.value.param == "response_format"


def test_sampling_and_limits() -> None:
    req = ChatRequest("m", [user("hi")], temperature=1.0, top_p=0.9, stop=["END"], seed=42, user="u-1",
                      presence_penalty=0.5, frequency_penalty=0.5, stream=True)
    assert body(req, max_tokens=777) == {
        "model": "m", "max_tokens": 777, "messages": [{"role": "user", "content": "hi"}],
        "temperature": 1.0, "top_p": 0.9, "stop_sequences": ["END"], "metadata": {"user_id": "u-1"},
        "stream": True,
    }
    assert body(ChatRequest("m", [user("hi")], max_tokens=5), max_tokens=777)["max_tokens"] == 5


def test_temperature_above_one_is_refused() -> None:
    with pytest.raises(InvalidRequest) as exc:
        body(ChatRequest("m", [user("hi")], temperature=1.5))
    assert exc.value.param == "temperature"
    assert exc.value.status_code == 400


def test_more_than_one_choice_is_refused() -> None:
    with pytest.raises(InvalidRequest) as exc:
        body(ChatRequest("m", [user("hi")], n=2))
    assert exc.value.param == "n"
    assert "n" not in body(ChatRequest("m", [user("hi")], n=1))


def test_system_only_conversation_is_refused() -> None:
    with pytest.raises(InvalidRequest) as exc:
        body(ChatRequest("m", [Message("system", [TextPart("You are helpful.")])]))
    assert exc.value.param == "messages"


def test_tool_result_with_image_is_sent_as_blocks() -> None:
    req = ChatRequest("m", [
        user("q"), Message("assistant", [], [ToolCall("t1", "f", "{}")]),
        Message("tool", [TextPart("see"), ImagePart("https://example.com/x.png")], tool_call_id="t1"),
    ], tools=[Tool("f")])
    assert body(req)["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "t1", "content": [
        {"type": "text", "text": "see"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/x.png"}},
    ]}]


def test_request_is_not_mutated() -> None:
    req = ChatRequest("m", [user("one"), user("two"), Message("assistant", [], [ToolCall("t", "f", "{}")]),
                            Message("tool", [TextPart("r")], tool_call_id="t")],
                      tools=[Tool("f", parameters={"properties": {}})], parallel_tool_calls=False)
    before = copy.deepcopy(req)
    body(req)
    body(req)
    assert req == before


@pytest.mark.parametrize(("effort", "max_tokens", "extra", "thinking"), [
    ("medium", 8000, {}, {"type": "enabled", "budget_tokens": 4096}),
    ("high", 5000, {}, {"type": "enabled", "budget_tokens": 4999}),  # kept below max_tokens
    ("low", 900, {}, None),  # below Anthropic's minimum budget: no thinking
    ("minimal", 8000, {}, None),
    ("medium", 8000, {"temperature": 0.2}, None),  # no sampling change with thinking: the effort gives way
    ("medium", 8000, {"tools": [WEATHER], "tool_choice": ToolChoice("named", "get_weather")}, None),
])
def test_a_reasoning_effort_is_an_extended_thinking_budget(
    effort: str, max_tokens: int, extra: dict[str, Any], thinking: dict[str, Any] | None
) -> None:
    req = ChatRequest("claude-sonnet-4-5", [user("Think first.")], max_tokens=max_tokens, reasoning_effort=effort,
                      **extra)
    assert body(req).get("thinking") == thinking
