"""End to end with the official ``openai`` SDK against a live gateway, through
every provider kind, with responses and chunks checked against OpenAI's
OpenAPI document."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import AUTH, MASTER_KEY, Stack, has_fake
from tests.openapi import validate

CHAT_MODELS = ["gpt-test", "compat-test", "mock"]
if has_fake("anthropic"):
    CHAT_MODELS.append("claude-test")
if has_fake("gemini"):
    CHAT_MODELS.append("gemini-test")

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
# A 1×1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_chat(client: openai.OpenAI, model: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Again please"},
        ],
        temperature=0.2,
        max_tokens=200,
    )
    validate(json.loads(raw.content), "CreateChatCompletionResponse")
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert "Again please" in (completion.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert raw.headers["x-gateway-deployment"].split("/")[0] in {
        "oai", "compat", "mock", "ant", "gem"}
    assert raw.headers["x-request-id"]


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_stream_matches_non_stream(client: openai.OpenAI, model: str) -> None:
    messages: Any = [{"role": "user", "content": "Tell me about streams"}]
    whole = client.chat.completions.create(model=model, messages=messages)
    chunks = list(client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_stream_chunks_fit_openai_schema(stack: Stack, model: str) -> None:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    events = []
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body, headers=AUTH, timeout=10) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read()
    frames = raw.split(b"\n\n")
    assert frames[-1] == b"" and frames[-2] == b"data: [DONE]"
    for frame in frames[:-2]:
        assert frame.startswith(b"data: ")
        events.append(json.loads(frame[6:]))
    for event in events:
        validate(event, "CreateChatCompletionStreamResponse")
    # Without include_usage, no usage-only chunk reaches the client.
    assert all(e["choices"] for e in events)


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_tool_round_trip(client: openai.OpenAI, model: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"
    args = json.loads(calls[0].function.arguments)
    assert isinstance(args.get("city"), str)
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": "18C and sunny"})
    second = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert "18C and sunny" in (second.choices[0].message.content or "")


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_streamed_tool_call(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model, stream=True, tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "Weather in Rome?"}],
    )
    ids, names, args = set(), set(), ""
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        for call in chunk.choices[0].delta.tool_calls or []:
            assert call.index == 0
            if call.id:
                ids.add(call.id)
            if call.function and call.function.name:
                names.add(call.function.name)
            if call.function and call.function.arguments:
                args += call.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert len(ids) == 1 and names == {"get_weather"}
    assert isinstance(json.loads(args)["city"], str)
    assert finish == "tool_calls"


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_image_input(stack: Stack, client: openai.OpenAI, model: str) -> None:
    http_url = f"{stack.fakes_urls['openai']}/image.png"
    completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in these pictures?"},
        {"type": "image_url", "image_url": {"url": DATA_URL}},
        {"type": "image_url", "image_url": {"url": http_url, "detail": "low"}},
    ]}])
    assert completion.choices[0].message.content


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_json_mode(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Answer in JSON"}],
    )
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"],
              "additionalProperties": False}
    completion = client.chat.completions.create(
        model=model,
        response_format={"type": "json_schema", "json_schema": {"name": "capital", "schema": schema,
                                                                "strict": True}},
        messages=[{"role": "user", "content": "Capital of France?"}],
    )
    assert isinstance(json.loads(completion.choices[0].message.content or "")["capital"], str)


EMBEDDING_MODELS = ["emb-test", "mock"] + (["gemini-emb"] if has_fake("gemini") else [])


@pytest.mark.parametrize("model", EMBEDDING_MODELS)
def test_embeddings(client: openai.OpenAI, model: str) -> None:
    # The SDK asks for base64 by default and decodes it; ask for floats too.
    got = client.embeddings.create(model=model, input=["first text", "second text"])
    assert [d.index for d in got.data] == [0, 1]
    assert all(len(d.embedding) > 0 and isinstance(d.embedding[0], float) for d in got.data)
    floats = client.embeddings.with_raw_response.create(
        model=model, input="one", encoding_format="float"
    )
    body = json.loads(floats.content)
    validate(body, "CreateEmbeddingResponse")
    assert body["usage"]["prompt_tokens"] >= 1


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"gpt-test", "mock", "emb-test"} <= set(ids)
    model = client.models.retrieve("gpt-test")
    assert model.id == "gpt-test" and model.object == "model"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert err.value.code == "model_not_found"


def test_chat_cost_header(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=[{"role": "user", "content": "price me"}]
    )
    usage = raw.parse().usage
    assert usage is not None
    expected = (usage.prompt_tokens * 0.15 + usage.completion_tokens * 0.60) / 1e6
    assert abs(float(raw.headers["x-gateway-cost-usd"]) - expected) < 1e-9


def test_cached_tokens_reported(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-test", messages=[
        {"role": "system", "content": "cached system prompt"}, {"role": "user", "content": "hi"}])
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 64
