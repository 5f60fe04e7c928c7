"""AnthropicProvider against the fake Anthropic server on a real port: the
bytes it sends, the answers and errors it maps, and its streams."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from llm_gateway.errors import (
    GatewayError,
    InvalidRequest,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
)
from llm_gateway.providers.anthropic.adapter import AnthropicProvider
from llm_gateway.providers.base import Target
from llm_gateway.settings import ProviderSettings
from llm_gateway.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    FinishDelta,
    Message,
    ResponseFormat,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    UsageDelta,
)
from tests.answers import collect_events, unwrap
from tests.fakes.anthropic_server import create_app
from tests.fakes.server import LiveServer, serve_in_thread

KEY = "sk-ant-test-key"
TARGET = Target("claude-haiku-4-5", max_output_tokens=321)
T = TypeVar("T")
WEATHER = Tool("get_weather", "Weather for a city", {
    "type": "object", "properties": {"location": {"type": "string"}, "units": {"enum": ["c", "f"]}},
    "required": ["location", "units"],
})


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[LiveServer, Any]]:
    app = create_app(api_key=KEY)
    live = serve_in_thread(app)
    try:
        yield live, app
    finally:
        live.stop()


@pytest.fixture
def fake(server: tuple[LiveServer, Any]) -> Any:
    app = server[1]
    app.state.requests.clear()
    app.state.headers.clear()
    return app


def settings(server: tuple[LiveServer, Any], **kw: Any) -> ProviderSettings:
    base = {"name": "claude", "kind": "anthropic", "api_base": f"{server[0].url}/v1", "api_key": KEY}
    return ProviderSettings(**(base | kw))


def run(server: tuple[LiveServer, Any], work: Callable[[AnthropicProvider], Awaitable[T]], **kw: Any) -> T:
    async def main() -> T:
        provider = AnthropicProvider(settings(server, **kw))
        await provider.start()
        try:
            return unwrap(await work(provider))  # type: ignore[no-any-return]
        finally:
            await provider.aclose()

    return asyncio.run(main())


def chat(server: tuple[LiveServer, Any], req: ChatRequest, **kw: Any) -> ChatResponse:
    return run(server, lambda p: p.chat(req, TARGET, "req-123"), **kw)


def stream(server: tuple[LiveServer, Any], req: ChatRequest) -> list[StreamEvent]:
    async def work(p: AnthropicProvider) -> list[StreamEvent]:
        return await collect_events(await p.chat_stream(req, TARGET, "req-456"))

    return run(server, work)


def user(text: str) -> Message:
    return Message("user", [TextPart(text)])


def test_chat_text_and_what_was_sent(server: tuple[LiveServer, Any], fake: Any) -> None:
    resp = chat(server, ChatRequest("public-name", [Message("system", [TextPart("Be brief.")]), user("hi")]))
    [choice] = resp.choices
    assert choice.text == "Hello from fake Anthropic: hi"
    assert choice.finish_reason == "stop"
    assert resp.id.startswith("msg_fake")
    assert resp.model == "claude-haiku-4-5"
    assert resp.created > 0
    assert resp.usage is not None and resp.usage.output_tokens == 5 and resp.usage.cached_input_tokens == 0
    [sent] = fake.state.requests
    assert sent == {"model": "claude-haiku-4-5", "max_tokens": 321, "system": "Be brief.",
                    "messages": [{"role": "user", "content": "hi"}]}
    [headers] = fake.state.headers
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"] == "req-123"


def test_trailing_slash_and_extra_headers(server: tuple[LiveServer, Any], fake: Any) -> None:
    resp = chat(server, ChatRequest("m", [user("hi")]), api_base=f"{server[0].url}/v1/",
                headers={"anthropic-beta": "some-beta"})
    assert resp.choices[0].text == "Hello from fake Anthropic: hi"
    assert fake.state.headers[0]["anthropic-beta"] == "some-beta"


def test_cached_usage(server: tuple[LiveServer, Any], fake: Any) -> None:
    resp = chat(server, ChatRequest("m", [Message("system", [TextPart("cached prompt")]), user("hi")]))
    sent_input = resp.usage.input_tokens if resp.usage else 0
    assert resp.usage is not None and resp.usage.cached_input_tokens == 100
    assert sent_input >= 120  # includes cache reads (100) and writes (20)


def test_max_tokens_cut_is_length(server: tuple[LiveServer, Any], fake: Any) -> None:
    resp = chat(server, ChatRequest("m", [user("one two three four")], max_tokens=3))
    assert resp.choices[0].text == "Hello from fake "
    assert resp.choices[0].finish_reason == "length"
    assert fake.state.requests[0]["max_tokens"] == 3


def test_tool_round_trip_with_merged_turns(server: tuple[LiveServer, Any], fake: Any) -> None:
    first = ChatRequest("m", [user("weather?"), user("in Paris")], tools=[WEATHER],
                        tool_choice=ToolChoice("required"), parallel_tool_calls=False)
    resp = chat(server, first)
    [choice] = resp.choices
    assert choice.finish_reason == "tool_calls"
    [call] = choice.tool_calls
    assert call.name == "get_weather" and call.id.startswith("toolu_fake")
    assert json.loads(call.arguments) == {"location": "fake", "units": "c"}
    assert fake.state.requests[0]["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    follow = ChatRequest("m", [*first.messages, Message("assistant", [], [call]),
                               Message("tool", [TextPart("18C and sunny")], tool_call_id=call.id)],
                         tools=[WEATHER])
    resp = chat(server, follow)  # the fake refuses non-alternating turns and unmatched tool ids
    assert resp.choices[0].text == "The tool said: 18C and sunny"
    assert resp.choices[0].finish_reason == "stop"


def test_json_schema_answer_is_text(server: tuple[LiveServer, Any], fake: Any) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
              "required": ["city", "n"]}
    req = ChatRequest("m", [user("give json")], response_format=ResponseFormat("json_schema", "Thing", schema))
    resp = chat(server, req)
    [choice] = resp.choices
    assert choice.tool_calls == []
    assert json.loads(choice.text or "") == {"city": "fake", "n": 1}
    assert choice.finish_reason == "stop"
    events = stream(server, ChatRequest("m", [user("give json")], stream=True,
                                        response_format=ResponseFormat("json_schema", "Thing", schema)))
    assert not any(isinstance(e, ToolCallDelta) for e in events)
    assert json.loads("".join(e.text for e in events if isinstance(e, TextDelta))) == {"city": "fake", "n": 1}
    assert [e.reason for e in events if isinstance(e, FinishDelta)] == ["stop"]


@pytest.mark.parametrize(("steer", "cls", "status"), [
    ("429", UpstreamRateLimited, 429),
    ("500", UpstreamError, 502),
    ("529", UpstreamError, 502),
    ("401", UpstreamError, 502),
    ("400", UpstreamRejected, 400),
    ("404", UpstreamRejected, 404),
])
def test_error_statuses(server: tuple[LiveServer, Any], fake: Any, steer: str, cls: type[GatewayError],
                        status: int) -> None:
    with pytest.raises(cls) as exc:
        chat(server, ChatRequest("m", [user(f"fake-error:{steer}")]))
    assert exc.value.status_code == status
    if steer == "429":
        assert exc.value.retry_after == 1.0
        assert "rate limit" in exc.value.message
    if steer == "400":
        assert "tool_use_id" in exc.value.message  # the provider's own wording reaches the client
    if steer == "404":
        assert exc.value.message == "model: claude-does-not-exist"
    if steer == "401":
        assert "x-api-key" not in exc.value.message


def test_wrong_key_is_a_bad_gateway_without_the_provider_message(server: tuple[LiveServer, Any],
                                                                  fake: Any) -> None:
    with pytest.raises(UpstreamError) as exc:
        chat(server, ChatRequest("m", [user("hi")]), api_key="sk-ant-wrong")
    assert exc.value.status_code == 502
    assert "x-api-key" not in exc.value.message and "wrong" not in exc.value.message


def test_translation_errors_are_raised_before_sending(server: tuple[LiveServer, Any], fake: Any) -> None:
    with pytest.raises(InvalidRequest):
        chat(server, ChatRequest("m", [user("hi")], n=3))
    assert fake.state.requests == []


def test_stream_text(server: tuple[LiveServer, Any], fake: Any) -> None:
    events = stream(server, ChatRequest("m", [Message("system", [TextPart("cached")]), user("hello there")],
                                        stream=True))
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert texts == ["Hello ", "from ", "fake ", "Anthropic: ", "hello ", "there"]
    assert isinstance(events[-2], FinishDelta) and events[-2].reason == "stop"
    last = events[-1]
    assert isinstance(last, UsageDelta)
    assert last.usage.output_tokens == 6 and last.usage.cached_input_tokens == 100
    assert fake.state.requests[0]["stream"] is True
    assert fake.state.headers[0]["x-request-id"] == "req-456"


def test_stream_tool_call(server: tuple[LiveServer, Any], fake: Any) -> None:
    events = stream(server, ChatRequest("m", [user("weather?")], stream=True, tools=[WEATHER]))
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0].id and calls[0].name == "get_weather" and calls[0].tool_index == 0
    assert len(calls) > 2 and all(c.id is None and c.tool_index == 0 for c in calls[1:])
    assert json.loads("".join(c.arguments for c in calls)) == {"location": "fake", "units": "c"}
    assert [e.reason for e in events if isinstance(e, FinishDelta)] == ["tool_calls"]


def test_stream_error_status_is_raised_before_iterating(server: tuple[LiveServer, Any], fake: Any) -> None:
    async def work(p: AnthropicProvider) -> None:
        await p.chat_stream(ChatRequest("m", [user("fake-error:429")], stream=True), TARGET, "r")

    with pytest.raises(UpstreamRateLimited) as exc:
        run(server, work)
    assert exc.value.retry_after == 1.0


def test_stream_midstream_error(server: tuple[LiveServer, Any], fake: Any) -> None:
    seen: list[StreamEvent] = []

    async def work(p: AnthropicProvider) -> None:
        events = await p.chat_stream(ChatRequest("m", [user("fake-error:midstream")], stream=True), TARGET, "r")
        async for e in events:
            seen.extend(e.events)

    with pytest.raises(UpstreamError, match="overloaded_error"):
        run(server, work)
    assert seen == [TextDelta("Hello ")]


def test_stream_ended_early(server: tuple[LiveServer, Any], fake: Any) -> None:
    with pytest.raises(UpstreamError, match="ended the stream early"):
        stream(server, ChatRequest("m", [user("fake-error:truncated")], stream=True))


def test_closing_a_stream_early_then_reusing_the_provider(server: tuple[LiveServer, Any], fake: Any) -> None:
    async def work(p: AnthropicProvider) -> tuple[StreamEvent, ChatResponse]:
        events = await p.chat_stream(ChatRequest("m", [user("a b c d e f g")], stream=True), TARGET, "r")
        first = await anext(events)
        await events.aclose()  # type: ignore[attr-defined]
        return first.events[0], (await p.chat(ChatRequest("m", [user("again")]), TARGET, "r2")).response

    first, resp = run(server, work)
    assert first == TextDelta("Hello ")
    assert resp.choices[0].text == "Hello from fake Anthropic: again"


def test_stream_events_are_not_buffered() -> None:
    """The first event reaches the caller while the upstream still holds the rest back."""
    gate = threading.Event()

    def sse(data: dict[str, Any]) -> bytes:
        return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()

    def delta(text: str) -> bytes:
        return sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})

    async def upstream(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        head = sse({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 3}}})
        head += sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        await send({"type": "http.response.body", "body": head + delta("first"), "more_body": True})
        await asyncio.to_thread(gate.wait, 20)
        tail = delta("second") + sse({"type": "content_block_stop", "index": 0})
        tail += sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}})
        tail += sse({"type": "message_stop"})
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    live = serve_in_thread(upstream, lifespan="off")

    async def main() -> tuple[StreamEvent, list[StreamEvent]]:
        provider = AnthropicProvider(ProviderSettings(name="c", kind="anthropic", api_base=f"{live.url}/v1"))
        await provider.start()
        try:
            events = await provider.chat_stream(ChatRequest("m", [user("x")], stream=True), TARGET, "r")
            first = await asyncio.wait_for(anext(events), 10)
            gate.set()
            return first.events[0], await collect_events(events)
        finally:
            gate.set()
            await provider.aclose()

    try:
        first, rest = asyncio.run(main())
    finally:
        live.stop()
    assert first == TextDelta("first")
    assert rest[0] == TextDelta("second")
    assert [type(e) for e in rest[1:]] == [FinishDelta, UsageDelta]


def test_embed_is_unsupported(server: tuple[LiveServer, Any]) -> None:
    with pytest.raises(InvalidRequest) as exc:
        run(server, lambda p: p.embed(EmbeddingRequest("claude", ["hi"]), TARGET, "r"))
    assert exc.value.status_code == 400
    assert exc.value.code == "unsupported_endpoint"
    assert "embeddings" in exc.value.message


def test_assistant_history_with_tool_calls_is_accepted_upstream(server: tuple[LiveServer, Any],
                                                                fake: Any) -> None:
    req = ChatRequest("m", [
        user("q"),
        Message("assistant", [TextPart("let me look")], [ToolCall("toolu_1", "get_weather", "{}"),
                                                          ToolCall("toolu_2", "get_weather", "")]),
        Message("tool", [TextPart("r1")], tool_call_id="toolu_1"),
        Message("tool", [TextPart("r2")], tool_call_id="toolu_2"),
    ], tools=[WEATHER])
    assert chat(server, req).choices[0].text == "The tool said: r1 | r2"


def test_passthrough_sends_the_clients_body_and_beta_features(server: tuple[LiveServer, Any], fake: Any) -> None:
    from llm_gateway.wire.anthropic.decode import decode_messages_request

    body = {"messages": [{"role": "user", "content": "hi"}], "top_k": 3, "model": "public-name"}
    req = decode_messages_request(body)
    assert req.origin is not None
    req.origin.headers["anthropic-beta"] = "context-management-2025-06-27"
    configured = {"headers": {"Anthropic-Beta": "prompt-caching-2024-07-31"}}
    result = run(server, lambda p: p.chat(req, TARGET, "req-1"), **configured)
    assert result.dialect == "anthropic.messages" and result.usage is not None and result.usage.output_tokens > 0
    assert fake.state.requests[-1] == {**body, "model": "claude-haiku-4-5", "max_tokens": 321}
    assert fake.state.headers[-1]["anthropic-beta"] == "prompt-caching-2024-07-31,context-management-2025-06-27"
    del req.origin.headers["anthropic-beta"]
    run(server, lambda p: p.chat(req, TARGET, "req-2"), **configured)
    assert fake.state.headers[-1]["anthropic-beta"] == "prompt-caching-2024-07-31"
    run(server, lambda p: p.chat(req, TARGET, "req-3"))
    assert "anthropic-beta" not in fake.state.headers[-1]
