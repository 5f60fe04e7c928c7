"""GeminiProvider against the fake Gemini upstream, over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import orjson
import pytest

from llm_gateway.errors import InvalidRequest, UpstreamError, UpstreamRateLimited, UpstreamRejected
from llm_gateway.providers.base import Target
from llm_gateway.providers.gemini.adapter import GeminiProvider
from llm_gateway.providers.registry import build_provider
from llm_gateway.settings import ProviderSettings
from llm_gateway.types import (
    ChatRequest,
    EmbeddingRequest,
    FinishDelta,
    ImagePart,
    Message,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageDelta,
)
from llm_gateway.wire.gemini.tool_ids import signature_of
from tests.answers import collect_events, unwrap
from tests.fakes.gemini_server import PNG, SIGNATURE, create_app
from tests.fakes.server import LiveServer, serve_in_thread

KEY = "test-gemini-key"
T = TypeVar("T")
WEATHER = Tool("get_weather", "Weather in a city", {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
    "additionalProperties": False,
})


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[LiveServer, list[dict[str, Any]]]]:
    app = create_app(api_key=KEY)
    server = serve_in_thread(app)
    yield server, app.state.requests
    server.stop()


@pytest.fixture
def run(upstream: tuple[LiveServer, list[dict[str, Any]]]) -> Callable[..., Any]:
    """Run ``fn(provider)`` in a fresh event loop with a started provider."""
    server, requests = upstream

    def runner(fn: Callable[[GeminiProvider], Awaitable[T]], *, key: str = KEY, private: bool = False) -> T:
        async def main() -> T:
            settings = ProviderSettings(name="gem", kind="gemini", api_base=f"{server.url}/v1beta/", api_key=key)
            provider = GeminiProvider(settings)
            provider.allow_private_image_hosts = private
            await provider.start()
            try:
                return unwrap(await fn(provider))  # type: ignore[no-any-return]
            finally:
                await provider.aclose()

        requests.clear()
        return asyncio.run(main())

    return runner


@pytest.fixture
def sent(upstream: tuple[LiveServer, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return upstream[1]


def target(model: str = "gemini-2.5-flash") -> Target:
    return Target(model=model, max_output_tokens=1024)


def chat(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model="client-model", messages=list(messages), **kw)


def user(text: str) -> Message:
    return Message("user", [TextPart(text)])


async def collect(events: AsyncIterator[Any]) -> list[StreamEvent]:
    return await collect_events(events)


def test_registry_builds_the_gemini_adapter() -> None:
    provider = build_provider(ProviderSettings(name="g", kind="gemini", api_key="k"))
    assert isinstance(provider, GeminiProvider) and provider.kind == "gemini"


def test_chat_text(run: Callable[..., Any], sent: list[dict[str, Any]]) -> None:
    resp = run(lambda p: p.chat(chat(Message("system", [TextPart("Be kind.")]), user("hi there")), target(), "req-1"))
    assert resp.choices[0].text == "Hello from fake Gemini: hi there"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.output_tokens == 6 and resp.usage.reasoning_tokens == 0
    [request] = sent
    assert request["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert request["headers"]["x-goog-api-key"] == KEY
    assert request["headers"]["x-request-id"] == "req-1"
    assert request["body"] == {"contents": [{"role": "user", "parts": [{"text": "hi there"}]}],
                               "systemInstruction": {"parts": [{"text": "Be kind."}]}}


def test_chat_thinking_and_cached_usage(run: Callable[..., Any]) -> None:
    req = chat(Message("system", [TextPart("thinking with cached context")]), user("hello"), max_tokens=3)
    resp = run(lambda p: p.chat(req, target(), "r"))
    c = resp.choices[0]
    assert c.text == "Hello from fake " and c.finish_reason == "length"  # thought part skipped
    assert resp.usage.reasoning_tokens == 7 and resp.usage.output_tokens == 3 + 7
    assert resp.usage.cached_input_tokens == 4 and resp.usage.input_tokens >= 4


def test_tool_call_round_trip_with_thought_signature(run: Callable[..., Any], sent: list[dict[str, Any]]) -> None:
    first = run(lambda p: p.chat(chat(user("Weather in Paris?"), tools=[WEATHER]), target("gemini-3-pro"), "r"))
    call = first.choices[0].tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.name, orjson.loads(call.arguments)) == ("get_weather", {"city": "fake"})
    decl = sent[0]["body"]["tools"][0]["functionDeclarations"][0]
    assert decl["parametersJsonSchema"] == WEATHER.parameters
    follow_up = chat(user("Weather in Paris?"), Message("assistant", tool_calls=[call]),
                     Message("tool", [TextPart('{"temp": 21}')], tool_call_id=call.id), tools=[WEATHER])
    second = run(lambda p: p.chat(follow_up, target("gemini-3-pro"), "r"))
    assert second.choices[0].text == 'Fake Gemini got the tool result: {"temp":21}'
    part = sent[0]["body"]["contents"][1]["parts"][0]
    assert base64.urlsafe_b64decode(part["thoughtSignature"] + "==") == base64.b64decode(SIGNATURE)
    assert sent[0]["body"]["contents"][2]["parts"][0]["functionResponse"] == {
        "name": "get_weather", "response": {"temp": 21}}


def test_gemini_3_refuses_a_call_without_signature(run: Callable[..., Any]) -> None:
    """The fake enforces Gemini 3's rule, so the placeholder signature is what
    lets a history the gateway did not produce through."""
    history = chat(user("Weather?"), Message("assistant", tool_calls=[ToolCall("toolu_1", "get_weather", "{}")]),
                   Message("tool", [TextPart("sunny")], tool_call_id="toolu_1"), tools=[WEATHER])
    resp = run(lambda p: p.chat(history, target("gemini-3-pro"), "r"))
    assert resp.choices[0].text == 'Fake Gemini got the tool result: {"result":"sunny"}'


def test_stream_text(run: Callable[..., Any], sent: list[dict[str, Any]]) -> None:
    async def go(p: GeminiProvider) -> list[StreamEvent]:
        return await collect(await p.chat_stream(chat(user("stream me please")), target(), "r"))

    events = run(go)
    assert sent[0]["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert sent[0]["query"] == {"alt": "sse"}
    texts = [e for e in events if isinstance(e, TextDelta)]
    assert len(texts) == 7 and "".join(t.text for t in texts) == "Hello from fake Gemini: stream me please"
    assert events[-2:] == [FinishDelta("stop"), events[-1]]
    assert isinstance(events[-1], UsageDelta) and events[-1].usage.output_tokens == 7


def test_stream_tool_call_and_thinking(run: Callable[..., Any]) -> None:
    async def go(p: GeminiProvider) -> list[StreamEvent]:
        req = chat(Message("system", [TextPart("thinking")]), user("Weather?"), tools=[WEATHER])
        return await collect(await p.chat_stream(req, target(), "r"))

    events = run(go)
    assert not [e for e in events if isinstance(e, TextDelta)]
    [call] = [e for e in events if isinstance(e, ToolCallDelta)]
    assert (call.tool_index, call.name, call.arguments) == (0, "get_weather", '{"city":"fake"}')
    assert call.id is not None and signature_of(call.id) is not None
    assert [e for e in events if isinstance(e, FinishDelta)] == [FinishDelta("tool_calls")]
    assert events[-1] == UsageDelta(Usage(input_tokens=events[-1].usage.input_tokens,  # type: ignore[union-attr]
                                          output_tokens=5 + 7, reasoning_tokens=7))


def test_stream_cut_midway_raises_after_first_event(run: Callable[..., Any]) -> None:
    seen: list[StreamEvent] = []

    async def go(p: GeminiProvider) -> None:
        async for event in await p.chat_stream(chat(user("fake-error:midstream please")), target(), "r"):
            seen.extend(event.events)

    with pytest.raises(UpstreamError, match="ended the stream early"):
        run(go)
    assert seen == [TextDelta("Hello ")]


def test_error_object_inside_a_stream_is_mapped(run: Callable[..., Any]) -> None:
    seen: list[StreamEvent] = []

    async def go(p: GeminiProvider) -> None:
        async for event in await p.chat_stream(chat(user("fake-error:stream-error please")), target(), "r"):
            seen.extend(event.events)

    with pytest.raises(UpstreamError) as exc:
        run(go)
    assert exc.value.status_code == 502 and seen == [TextDelta("Hello ")]


def test_stream_error_status_raises_before_iterating(run: Callable[..., Any]) -> None:
    async def go(p: GeminiProvider) -> None:
        await p.chat_stream(chat(user("fake-error:429")), target(), "r")

    with pytest.raises(UpstreamRateLimited) as exc:
        run(go)
    assert exc.value.status_code == 429 and exc.value.retry_after == 53.0


def test_closing_a_stream_early_is_clean(run: Callable[..., Any]) -> None:
    async def go(p: GeminiProvider) -> StreamEvent:
        events = await p.chat_stream(chat(user("one two three four")), target(), "r")
        first = await anext(events)
        await events.aclose()  # type: ignore[attr-defined]
        return first.events[0]

    assert run(go) == TextDelta("Hello ")


@pytest.mark.parametrize(("text", "cls", "status"), [
    ("fake-error:429", UpstreamRateLimited, 429), ("fake-error:500", UpstreamError, 502),
    ("fake-error:503", UpstreamError, 502), ("fake-error:400", UpstreamRejected, 400),
])
def test_chat_errors(run: Callable[..., Any], text: str, cls: type, status: int) -> None:
    with pytest.raises(cls) as exc:
        run(lambda p: p.chat(chat(user(text)), target(), "r"))
    assert exc.value.status_code == status


def test_bad_provider_key_is_502_without_provider_message(run: Callable[..., Any]) -> None:
    with pytest.raises(UpstreamError) as exc:
        run(lambda p: p.chat(chat(user("hi")), target(), "r"), key="wrong-key")
    assert exc.value.status_code == 502 and "API key" not in exc.value.message


def test_unknown_model_is_404(run: Callable[..., Any]) -> None:
    with pytest.raises(UpstreamRejected) as exc:
        run(lambda p: p.embed(EmbeddingRequest("e", ["x"]), target("missing-model"), "r"))
    assert exc.value.status_code == 404 and "missing-model" in exc.value.message


def test_embed(run: Callable[..., Any], sent: list[dict[str, Any]]) -> None:
    resp = run(lambda p: p.embed(EmbeddingRequest("e", ["alpha", "beta"]), target("text-embedding-004"), "r"))
    assert [len(v) for v in resp.vectors] == [8, 8] and resp.vectors[0] != resp.vectors[1]
    assert resp.usage.input_tokens == 3  # estimated: 2 + 1
    [request] = sent
    assert request["path"] == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert len(request["body"]["requests"]) == 2


def test_embed_dimensions_and_base64(run: Callable[..., Any], sent: list[dict[str, Any]]) -> None:
    floats = run(lambda p: p.embed(EmbeddingRequest("e", ["alpha"], dimensions=4), target("emb"), "r")).vectors[0]
    assert sent[0]["body"]["requests"][0]["outputDimensionality"] == 4
    encoded = run(lambda p: p.embed(EmbeddingRequest("e", ["alpha"], "base64", 4), target("emb"), "r")).vectors[0]
    assert struct.unpack("<4f", base64.b64decode(encoded)) == pytest.approx(floats, rel=1e-6)


def test_embed_token_arrays_refused_without_calling(run: Callable[..., Any], sent: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidRequest):
        run(lambda p: p.embed(EmbeddingRequest("e", [[1, 2]]), target("emb"), "r"))
    assert sent == []


def image_chat(url: str) -> ChatRequest:
    return chat(Message("user", [TextPart("What is this?"), ImagePart(url)]))


def test_remote_image_is_downloaded_and_inlined(
    run: Callable[..., Any], sent: list[dict[str, Any]], upstream: tuple[LiveServer, Any]
) -> None:
    for name in ("pixel.png", "redirect"):
        run(lambda p, n=name: p.chat(image_chat(f"{upstream[0].url}/images/{n}"), target(), "r"), private=True)
        generate = [r for r in sent if r["method"] == "POST"]
        assert generate[-1]["body"]["contents"][0]["parts"][1] == {
            "inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}}


@pytest.mark.parametrize(("path", "private"), [
    ("/images/page.html", True), ("/images/nothing.png", True), ("/images/pixel.png", False),
])
def test_bad_image_urls_are_400(
    run: Callable[..., Any], sent: list[dict[str, Any]], upstream: tuple[LiveServer, Any], path: str, private: bool
) -> None:
    with pytest.raises(InvalidRequest) as exc:
        run(lambda p: p.chat(image_chat(upstream[0].url + path), target(), "r"), private=private)
    assert exc.value.status_code == 400 and exc.value.param == "messages[0].content[1]"
    assert not [r for r in sent if r["method"] == "POST"]
