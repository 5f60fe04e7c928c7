"""The ``litellm`` provider kind against the fake upstreams: LiteLLM's SDK
pointed with ``api_base`` at the fake OpenAI (``openai/…``), Anthropic
(``anthropic/…``) and Gemini (``gemini/…``) servers, and at the
fault-injecting one for retries and fallbacks. Chat, streams, tools,
embeddings, images, ``/v1/messages``, billing to the nano-dollar from the
usage LiteLLM reports, errors mapped, a client that cuts a stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

pytest.importorskip("litellm")  # (in the dev extra: CI has it)

from tests.conftest import AUTH, Stack, running_stack
from tests.fakes import faulty_server, openai_server
from tests.fakes.server import LiveServer, serve_in_thread
from tests.integration.money import credit, settled

PRICEY = {"input_per_mtok": "1000", "output_per_mtok": "2000"}
MILLION = Decimal(1_000_000)


def _edit(faulty: str) -> Any:
    def edit(config: dict[str, Any]) -> None:
        urls = {p["name"]: p["api_base"] for p in config["providers"]}
        oai, ant, gem = urls["oai"], urls["ant"].removesuffix("/v1"), urls["gem"]
        config["providers"] += [
            {"name": "ll-oai", "kind": "litellm", "api_base": oai, "api_key": openai_server.API_KEY,
             "fetch_private_image_urls": True},
            {"name": "ll-oai-slow", "kind": "litellm", "api_base": oai, "api_key": openai_server.API_KEY,
             "timeout_s": 0.5},
            {"name": "ll-oai-bad", "kind": "litellm", "api_base": oai, "api_key": "sk-wrong-key-1234"},
            {"name": "ll-ant", "kind": "litellm", "api_base": ant, "api_key": "test-anthropic-key"},
            {"name": "ll-gem", "kind": "litellm", "api_base": gem, "api_key": "test-gemini-key"},
            {"name": "ll-faulty", "kind": "litellm", "api_base": f"{faulty}/v1", "api_key": faulty_server.API_KEY},
            {"name": "ll-down", "kind": "litellm", "api_base": "http://127.0.0.1:9/v1", "api_key": "x"},
        ]
        config["models"] += [
            {"name": "ll-gpt", "deployments": [{"provider": "ll-oai", "model": "openai/gpt-4o-mini"}],
             "pricing": PRICEY, "max_output_tokens": 50},
            {"name": "ll-gpt-bundled", "deployments": [{"provider": "ll-oai", "model": "openai/gpt-4o-mini"}]},
            {"name": "ll-missing", "deployments": [{"provider": "ll-oai", "model": "openai/missing-model"}]},
            {"name": "ll-slow", "deployments": [{"provider": "ll-oai-slow", "model": "openai/gpt-4o-mini"}]},
            {"name": "ll-badkey", "deployments": [{"provider": "ll-oai-bad", "model": "openai/gpt-4o-mini"}]},
            {"name": "ll-claude", "deployments": [{"provider": "ll-ant", "model": "anthropic/claude-haiku-4-5"}],
             "pricing": PRICEY, "max_output_tokens": 50},
            {"name": "ll-gemini", "deployments": [{"provider": "ll-gem", "model": "gemini/gemini-2.5-flash"}],
             "pricing": PRICEY, "max_output_tokens": 50},
            {"name": "ll-emb", "mode": "embedding",
             "deployments": [{"provider": "ll-oai", "model": "openai/text-embedding-3-small"}],
             "pricing": {"input_per_mtok": "20", "output_per_mtok": "0"}},
            {"name": "ll-flaky", "deployments": [{"provider": "ll-faulty", "model": "openai/flaky"}],
             "fallbacks": ["ll-steady"]},
            {"name": "ll-steady", "deployments": [{"provider": "ll-faulty", "model": "openai/steady"}]},
            {"name": "ll-down", "deployments": [{"provider": "ll-down", "model": "openai/gpt-4o-mini"}]},
        ]
    return edit


@pytest.fixture(scope="module")
def faulty() -> Iterator[LiveServer]:
    server = serve_in_thread(faulty_server.create_app())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ll(tmp_path_factory: pytest.TempPathFactory, faulty: LiveServer) -> Iterator[Stack]:
    folder: Path = tmp_path_factory.mktemp("litellm")
    # One retry, no waiting: a 500 is retried at once; a 429's Retry-After (1 s)
    # is longer than the gateway will wait, so it goes back to the client.
    routing = {"retries": 1, "backoff_base_s": 0, "max_retry_wait_s": 0,
               "circuit_breaker": {"failure_threshold": 1_000_000}}
    with running_stack(folder, f"sqlite+aiosqlite:///{folder}/gateway.db", extra={"routing": routing},
                       edit=_edit(faulty.url)) as stack:
        yield stack


def _funded_key(stack: Stack, amount: str = "5") -> tuple[str, str]:
    user = httpx.post(f"{stack.url}/admin/users", json={"email": f"ll{time.time_ns()}@example.com"}, headers=AUTH)
    key = httpx.post(f"{stack.url}/admin/users/{user.json()['id']}/keys", json={"name": "ll"}, headers=AUTH)
    credit(stack.database_url, user.json()["id"], amount)
    return user.json()["id"], key.json()["key"]


def _client(stack: Stack, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key or AUTH["authorization"][7:], max_retries=0)


def _cost(usage: Any, input_per_mtok: str, output_per_mtok: str) -> Decimal:
    return (usage.prompt_tokens * Decimal(input_per_mtok) + usage.completion_tokens * Decimal(output_per_mtok)) / (
        MILLION)


MODELS = [("ll-gpt", "openai", "Hello from fake OpenAI"), ("ll-claude", "anthropic", "Hello from fake Anthropic"),
          ("ll-gemini", "gemini", "Hello from fake Gemini")]


@pytest.mark.parametrize(("model", "fake", "greeting"), MODELS)
def test_chat_and_stream_are_billed_to_the_nano_dollar_from_reported_usage(
    ll: Stack, model: str, fake: str, greeting: str
) -> None:
    user_id, key = _funded_key(ll)
    client = _client(ll, key)
    before = len(ll.requests_to(fake))
    messages: Any = [{"role": "user", "content": "count the words here"}]
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    answer = raw.parse()
    assert answer.choices[0].message.content == f"{greeting}: count the words here"
    assert raw.headers["x-gateway-deployment"].startswith("ll-")
    assert answer.usage is not None and answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    cost = _cost(answer.usage, "1000", "2000")
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == cost

    stream = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True})
    chunks = list(stream.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"{greeting}: count the words here"
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    streamed = _cost(usage, "1000", "2000")
    assert len(ll.requests_to(fake)) == before + 2  # both reached the provider, through LiteLLM

    b = settled(ll.database_url, user_id)
    assert b.charges == {raw.headers["x-request-id"]: cost, stream.headers["x-request-id"]: streamed}
    assert b.balance == b.ledger_sum == Decimal(5) - cost - streamed and b.reserved == 0


@pytest.mark.parametrize(("model", "fake"), [("ll-gpt", "openai"), ("ll-claude", "anthropic"),
                                             ("ll-gemini", "gemini")])
@pytest.mark.parametrize("stream", [False, True])
def test_tools(ll: Stack, model: str, fake: str, stream: bool) -> None:
    tools: Any = [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    messages: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    client = _client(ll)
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=messages, tools=tools, stream=True))
        deltas = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
        names = [t.function.name for t in deltas if t.function and t.function.name]
        arguments = "".join(t.function.arguments or "" for t in deltas if t.function)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        answer = client.chat.completions.create(model=model, messages=messages, tools=tools)
        calls = answer.choices[0].message.tool_calls or []
        names = [c.function.name for c in calls if c.type == "function"]
        arguments = "".join(c.function.arguments for c in calls if c.type == "function")
        finish = [answer.choices[0].finish_reason]
    assert names == ["get_weather"]
    assert isinstance(json.loads(arguments)["city"], str)
    assert finish == ["tool_calls"]
    sent = json.dumps(ll.requests_to(fake)[-1])
    assert "get_weather" in sent  # the tool went up in the provider's own format


def test_json_mode_and_images(ll: Stack) -> None:
    client = _client(ll)
    answer = client.chat.completions.create(
        model="ll-gpt", messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"})
    assert json.loads(answer.choices[0].message.content or "") == {"echo": "hi"}
    image = f"{ll.fakes_urls['openai']}/image.png"
    answer = client.chat.completions.create(model="ll-gpt", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": image}}]}])
    assert answer.choices[0].message.content == "I see 1 image(s). what is this"
    # The gateway fetched the image itself (LiteLLM never fetches a client's URL): a data URL went up.
    part = ll.requests_to("openai")[-1]["body"]["messages"][0]["content"][1]
    assert part["image_url"]["url"].startswith("data:image/png;base64,")


def test_embeddings_are_billed(ll: Stack) -> None:
    user_id, key = _funded_key(ll)
    raw = _client(ll, key).embeddings.with_raw_response.create(model="ll-emb", input=["one two three", "four"])
    result = raw.parse()
    assert [len(d.embedding) for d in result.data] == [4, 4]
    assert result.usage.prompt_tokens == 4
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == Decimal(4 * 20) / MILLION
    b = settled(ll.database_url, user_id)
    assert b.charges == {raw.headers["x-request-id"]: Decimal(4 * 20) / MILLION}


def test_bundled_prices_bill_a_model_without_pricing_and_show_their_source(ll: Stack) -> None:
    user_id, key = _funded_key(ll)
    raw = _client(ll, key).chat.completions.with_raw_response.create(
        model="ll-gpt-bundled", messages=[{"role": "user", "content": "price me"}])
    usage = raw.parse().usage
    # LiteLLM's bundled map prices gpt-4o-mini at 0.15 / 0.60 USD per million tokens.
    assert Decimal(raw.headers["x-gateway-cost-usd"]) == _cost(usage, "0.15", "0.60") > 0
    assert settled(ll.database_url, user_id).charges[raw.headers["x-request-id"]] == _cost(usage, "0.15", "0.60")
    models = {m["id"]: m for m in httpx.get(f"{ll.url}/v1/models", headers=AUTH).json()["data"]}
    assert models["ll-gpt-bundled"]["pricing"] == {"input_per_mtok": "0.15", "output_per_mtok": "0.6",
                                                   "cached_input_per_mtok": "0.075", "source": "litellm"}
    assert models["ll-gpt"]["pricing"]["source"] == "config"
    assert models["ll-steady"]["pricing"]["source"] == "none"  # the map knows no "steady"


def test_anthropic_messages_ingress(ll: Stack) -> None:
    resp = httpx.post(f"{ll.url}/v1/messages", headers={"x-api-key": AUTH["authorization"][7:]},
                      json={"model": "ll-claude", "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["type"] == "message"
    assert body["content"][0]["text"] == "Hello from fake Anthropic: hi"
    assert body["usage"]["output_tokens"] > 0


def _error(stack: Stack, model: str, text: str) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/chat/completions", headers=AUTH, timeout=20,
                      json={"model": model, "messages": [{"role": "user", "content": text}]})


def test_rate_limit_is_429_with_retry_after(ll: Stack) -> None:
    resp = _error(ll, "ll-gpt", "fake-error:429")
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "1"
    assert resp.json()["error"]["type"] == "rate_limit_error"
    assert resp.json()["error"]["message"].startswith("Rate limit reached for gpt-4o-mini")


@pytest.mark.parametrize(("model", "text", "status", "error_type", "words"), [
    ("ll-gpt", "fake-error:400", 400, "invalid_request_error", "maximum context length"),
    ("ll-claude", "fake-error:400", 400, "invalid_request_error", "tool_use_id"),
    ("ll-missing", "hello", 404, "invalid_request_error", "does not exist"),
    ("ll-badkey", "hello", 502, "upstream_error", "rejected the gateway's credentials"),
    ("ll-slow", "fake-error:hang", 504, "timeout_error", "timed out"),
    ("ll-down", "hello", 502, "upstream_error", "connect"),
    ("ll-gpt", "fake-error:500", 502, "upstream_error", "failed with status 500"),
])
def test_errors_are_mapped(ll: Stack, model: str, text: str, status: int, error_type: str, words: str) -> None:
    resp = _error(ll, model, text)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["type"] == error_type
    assert words in error["message"]
    assert "sk-wrong" not in resp.text and "127.0.0.1" not in resp.text and "litellm" not in resp.text.lower()


def test_500_is_retried_then_falls_back(ll: Stack, faulty: LiveServer) -> None:
    faulty.server.config.app.state.plans["flaky"] = faulty_server.Plan(fail_first=1_000_000, failure="500")
    calls = faulty.server.config.app.state.calls
    before = calls["flaky"], calls["steady"]
    resp = _error(ll, "ll-flaky", "hello")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-gateway-deployment"] == "ll-faulty/openai/steady"
    assert (calls["flaky"] - before[0], calls["steady"] - before[1]) == (2, 1)  # one retry, then the fallback


def test_stream_cut_by_the_client_stops_upstream_and_is_charged(ll: Stack) -> None:
    user_id, key = _funded_key(ll)
    fake = ll.fakes["openai"].state
    fake.stream_cancelled_at = None
    body = {"model": "ll-gpt", "stream": True, "messages": [{"role": "user", "content": "fake-error:slowstream"}]}
    with httpx.stream("POST", f"{ll.url}/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}"}, timeout=10) as resp:
        assert resp.status_code == 200
        request_id = resp.headers["x-request-id"]
        seen = 0
        for line in resp.iter_lines():
            seen += line.startswith("data:")
            if seen == 5:
                break
    # The slow stream runs 20 s unless its connection is closed: LiteLLM's stream was closed.
    deadline = time.monotonic() + 10
    while fake.stream_cancelled_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.stream_cancelled_at is not None
    b = settled(ll.database_url, user_id)
    assert b.open_holds == 0 and b.reserved == 0
    charged = b.charges[request_id]
    # The prompt plus at least the chunks seen, at 0.001/0.002 per token, far below the 50-token hold.
    assert Decimal("0.01") <= charged < Decimal("0.2")
    assert b.balance == b.ledger_sum == Decimal(5) - charged
