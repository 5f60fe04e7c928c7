"""``POST /v1/messages`` end to end with the official ``anthropic`` SDK
against a live gateway (SPEC §3): any configured model answers in the
Messages API's shape, streamed or not, with tools and images; errors,
billing and the cache work as on ``/v1/chat/completions``."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import AUTH, MASTER_KEY, Stack, has_fake, running_stack

MODELS = ["gpt-test", "compat-test", "mock"]
if has_fake("anthropic"):
    MODELS.append("claude-test")
if has_fake("gemini"):
    MODELS.append("gemini-test")

WEATHER_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
    },
}
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _client(stack: Stack, key: str = MASTER_KEY) -> anthropic.Anthropic:
    # The SDK sends the key as x-api-key, as it does to Anthropic.
    return anthropic.Anthropic(base_url=stack.url, api_key=key, max_retries=0, timeout=20)


def _text(message: Any) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def _sse_events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in body.decode().split("\n\n"):
        if not frame:
            continue
        name, data = frame.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), frame
        events.append((name[7:], json.loads(data[6:])))
    return events


@pytest.mark.parametrize("model", MODELS)
def test_messages_from_any_model(stack: Stack, model: str) -> None:
    raw = _client(stack).messages.with_raw_response.create(
        model=model, max_tokens=200, system="Be brief.", extra_body={"temperature": 0.2},
        messages=[{"role": "user", "content": "Say hello"},
                  {"role": "assistant", "content": "Hello!"},
                  {"role": "user", "content": [{"type": "text", "text": "Again please"}]}],
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert "Again please" in _text(message)
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["x-gateway-deployment"].split("/")[0] in {"oai", "compat", "mock", "ant", "gem"}
    assert raw.headers["x-gateway-cache"] == "BYPASS" or raw.headers["x-gateway-cache"] == "MISS"
    assert raw.headers["x-request-id"]


@pytest.mark.parametrize("model", MODELS)
def test_stream_matches_non_stream(stack: Stack, model: str) -> None:
    messages: Any = [{"role": "user", "content": "Tell me about streams"}]
    whole = _client(stack).messages.create(model=model, max_tokens=200, messages=messages)
    with _client(stack).messages.stream(model=model, max_tokens=200, messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == _text(whole) == _text(final)
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_stream_is_anthropics_event_sequence(stack: Stack) -> None:
    resp = httpx.post(f"{stack.url}/v1/messages", headers={"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"},
                      json={"model": "gpt-test", "max_tokens": 50, "stream": True,
                            "messages": [{"role": "user", "content": "stream please"}]}, timeout=20)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(resp.content)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "content_block_start"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["stop_reason"] is None
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] > 0


@pytest.mark.parametrize("model", MODELS)
def test_tool_round_trip(stack: Stack, model: str) -> None:
    client = _client(stack)
    messages: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = client.messages.create(model=model, max_tokens=200, messages=messages, tools=[WEATHER_TOOL])
    assert first.stop_reason == "tool_use"
    calls = [b for b in first.content if b.type == "tool_use"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert isinstance(calls[0].input, dict) and isinstance(calls[0].input.get("city"), str)
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": calls[0].id, "content": "18C and sunny"}]})
    second = client.messages.create(model=model, max_tokens=200, messages=messages, tools=[WEATHER_TOOL])
    assert second.stop_reason == "end_turn"
    assert "18C and sunny" in _text(second)


@pytest.mark.parametrize("model", MODELS)
def test_streamed_tool_use(stack: Stack, model: str) -> None:
    with _client(stack).messages.stream(
        model=model, max_tokens=200, tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Rome?"}],
    ) as stream:
        final = stream.get_final_message()
    calls = [b for b in final.content if b.type == "tool_use"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].id
    assert isinstance(calls[0].input["city"], str)  # type: ignore[index]
    assert final.stop_reason == "tool_use"


@pytest.mark.parametrize("model", ["gpt-test", "mock"] + (["claude-test"] if has_fake("anthropic") else []))
def test_image_blocks(stack: Stack, model: str) -> None:
    message = _client(stack).messages.create(model=model, max_tokens=100, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": base64.b64encode(PNG).decode()}},
    ]}])
    assert _text(message)


@pytest.mark.parametrize("model", MODELS)
def test_structured_output(stack: Stack, model: str) -> None:
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"],
              "additionalProperties": False}
    message = _client(stack).messages.create(
        model=model, max_tokens=200, output_config={"format": {"type": "json_schema", "schema": schema}},
        messages=[{"role": "user", "content": "Capital of France?"}])
    assert isinstance(json.loads(_text(message))["capital"], str)


def test_bearer_and_x_api_key_both_work(stack: Stack) -> None:
    body = {"model": "mock", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{stack.url}/v1/messages", json=body, headers=AUTH).status_code == 200
    assert httpx.post(f"{stack.url}/v1/messages", json=body, headers={"x-api-key": MASTER_KEY}).status_code == 200
    refused = httpx.post(f"{stack.url}/v1/messages", json=body, headers={"x-api-key": "gw-" + "x" * 40})
    assert refused.status_code == 401
    assert refused.json() == {"type": "error", "error": {
        "message": refused.json()["error"]["message"], "type": "authentication_error", "param": None,
        "code": "invalid_api_key"}}


def test_errors_reach_the_sdk_in_the_gateways_shape(stack: Stack) -> None:
    client = _client(stack)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["type"] == "error"  # type: ignore[index]
    assert missing.value.body["error"]["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        _client(stack, "gw-" + "y" * 40).messages.create(
            model="mock", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="mock", max_tokens=5, messages=[{"role": "system", "content": "x"}])  # type: ignore[misc, list-item]
    assert bad.value.body["error"]["param"] == "messages[0].role"  # type: ignore[index]


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"model": "mock", "max_tokens": 5}, "messages", "missing_field"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model", "missing_field"),
    ({"model": "mock", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens",
     "invalid_value"),
    ({"model": "mock", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
    ({"model": "mock", "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
     "messages[0].content[0].type", "unsupported_value"),
    ({"model": "mock", "messages": [{"role": "user", "content": "x"}], "temperature": 1.5}, "temperature",
     "invalid_value"),
    ({"model": "mock", "messages": [{"role": "user", "content": "x"}], "mcp_servers": []}, "mcp_servers",
     "unsupported_value"),
    ({"model": "mock", "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type", "unsupported_value"),
    ({"model": "mock", "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "any"}}, "tools",
     "missing_field"),
])
def test_bad_requests_name_the_field(stack: Stack, body: dict[str, Any], param: str, code: str) -> None:
    resp = httpx.post(f"{stack.url}/v1/messages", json=body, headers={"x-api-key": MASTER_KEY})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)


def test_invalid_json_is_a_400(stack: Stack) -> None:
    resp = httpx.post(f"{stack.url}/v1/messages", content=b"{not json", headers={"x-api-key": MASTER_KEY})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"


def test_a_stream_cut_upstream_ends_with_an_error_event(stack: Stack) -> None:
    resp = httpx.post(f"{stack.url}/v1/messages", headers={"x-api-key": MASTER_KEY},
                      json={"model": "gpt-test", "max_tokens": 50, "stream": True,
                            "messages": [{"role": "user", "content": "go fake-error:midstream"}]}, timeout=20)
    assert resp.status_code == 200
    events = _sse_events(resp.content)
    assert events[0][0] == "message_start" and events[-1][0] == "error"
    assert "message_stop" not in [name for name, _ in events]
    assert events[-1][1]["type"] == "error" and events[-1][1]["error"]["type"] == "api_error"


def _funded(stack: Stack, amount: str) -> tuple[str, str]:
    user = httpx.post(f"{stack.url}/admin/users", json={"email": f"m{time.time_ns()}@example.com"}, headers=AUTH)
    uid = user.json()["id"]
    assert httpx.post(f"{stack.url}/admin/users/{uid}/credits", json={"amount_usd": amount},
                      headers=AUTH).status_code == 201
    key = httpx.post(f"{stack.url}/admin/users/{uid}/keys", json={"name": "m"}, headers=AUTH).json()["key"]
    return uid, key


def _balance(stack: Stack, uid: str) -> Decimal:
    return Decimal(httpx.get(f"{stack.url}/admin/users/{uid}", headers=AUTH).json()["balance_usd"])


def _requests(stack: Stack, uid: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        rows: list[dict[str, Any]] = httpx.get(f"{stack.url}/admin/requests", params={"user_id": uid},
                                               headers=AUTH).json()["data"]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_billed_and_recorded_like_chat(stack: Stack) -> None:
    uid, key = _funded(stack, "1.00")
    client = _client(stack, key)
    raw = client.messages.with_raw_response.create(model="gpt-test", max_tokens=50,
                                                   messages=[{"role": "user", "content": "bill me"}])
    usage = raw.parse().usage
    cost = Decimal(raw.headers["x-gateway-cost-usd"])
    assert cost == (Decimal(usage.input_tokens) * Decimal("0.15") + Decimal(usage.output_tokens) * Decimal("0.60")
                    ) / 1_000_000 > 0
    with client.messages.stream(model="gpt-test", max_tokens=50,
                                messages=[{"role": "user", "content": "bill my stream"}]) as stream:
        streamed = stream.get_final_message().usage
    rows = _requests(stack, uid, 2)
    assert [(r["endpoint"], r["stream"], r["status"]) for r in rows] == [("messages", True, 200),
                                                                        ("messages", False, 200)]
    assert rows[0]["output_tokens"] == streamed.output_tokens and rows[1]["input_tokens"] == usage.input_tokens
    charged = sum(Decimal(r["cost_usd"]) for r in rows)
    assert _balance(stack, uid) == Decimal("1.00") - charged


def test_no_balance_no_answer(stack: Stack) -> None:
    _, key = _funded(stack, "0.000001")
    with pytest.raises(anthropic.APIStatusError) as refused:
        _client(stack, key).messages.create(model="pricey", max_tokens=50,
                                            messages=[{"role": "user", "content": "too dear"}])
    assert refused.value.status_code == 402
    assert refused.value.body["error"]["code"] == "insufficient_quota"  # type: ignore[index]


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder: Path = tmp_path_factory.mktemp("messages-cache")
    with running_stack(folder, f"sqlite+aiosqlite:///{folder}/gw.db", {"cache": {"enabled": True}}) as s:
        yield s


def test_cache_hits_replay_as_messages_and_streams(cached: Stack) -> None:
    client = _client(cached)
    question: Any = [{"role": "user", "content": f"cache me {uuid.uuid4().hex}"}]
    before = len(cached.requests_to("openai"))
    miss = client.messages.with_raw_response.create(model="gpt-test", max_tokens=50, messages=question)
    hit = client.messages.with_raw_response.create(model="gpt-test", max_tokens=50, messages=question,
                                                   metadata={"user_id": "someone"})
    assert (miss.headers["x-gateway-cache"], hit.headers["x-gateway-cache"]) == ("MISS", "HIT")
    assert _text(hit.parse()) == _text(miss.parse()) and hit.parse().usage == miss.parse().usage
    with client.messages.stream(model="gpt-test", max_tokens=50, messages=question) as stream:
        assert stream.response.headers["x-gateway-cache"] == "HIT"
        replayed = stream.get_final_message()
    assert _text(replayed) == _text(miss.parse()) and replayed.stop_reason == "end_turn"
    assert replayed.usage.output_tokens == miss.parse().usage.output_tokens
    assert len(cached.requests_to("openai")) - before == 1
    other = client.messages.with_raw_response.create(model="gpt-test", max_tokens=51, messages=question)
    assert other.headers["x-gateway-cache"] == "MISS", "max_tokens changes the answer"


def test_openapi_documents_every_v1_route(stack: Stack) -> None:
    schema = httpx.get(f"{stack.url}/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/models", "/v1/messages", "/v1/messages/count_tokens"):
        assert path in schema["paths"], path
    ref = schema["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["required"] == ["model", "messages"]


def test_a_streamed_answer_fills_the_cache_for_plain_requests(cached: Stack) -> None:
    client = _client(cached)
    question: Any = [{"role": "user", "content": f"stream then plain {uuid.uuid4().hex}"}]
    before = len(cached.requests_to("openai"))
    with client.messages.stream(model="gpt-test", max_tokens=50, messages=question) as stream:
        assert stream.response.headers["x-gateway-cache"] == "MISS"
        streamed = stream.get_final_message()
    plain = client.messages.with_raw_response.create(model="gpt-test", max_tokens=50, messages=question)
    assert plain.headers["x-gateway-cache"] == "HIT"
    assert _text(plain.parse()) == _text(streamed) and plain.parse().usage.output_tokens == streamed.usage.output_tokens
    assert len(cached.requests_to("openai")) - before == 1


# ------------------------------------------------------ Anthropic passthrough

needs_anthropic = pytest.mark.skipif(not has_fake("anthropic"), reason="no fake Anthropic server")

RICH_BODY: dict[str, Any] = {
    "model": "claude-test", "max_tokens": 300, "top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024},
    "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                                          {"type": "text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "text", "text": "then this", "cache_control": {"type": "ephemeral"}}]},
    ],
}


@needs_anthropic
def test_an_anthropic_deployment_gets_the_clients_own_body_and_answers_byte_for_byte(stack: Stack) -> None:
    beta = "context-management-2025-06-27,interleaved-thinking-2025-05-14"
    resp = httpx.post(f"{stack.url}/v1/messages", json=RICH_BODY, params={"beta": "true"},
                      headers={"x-api-key": MASTER_KEY, "anthropic-beta": beta}, timeout=20)
    assert resp.status_code == 200, resp.text
    assert stack.fakes["anthropic"].state.headers[-1]["anthropic-beta"] == beta  # Claude Code's features too
    sent = stack.requests_to("anthropic")[-1]
    assert sent == {**RICH_BODY, "model": "claude-haiku-4-5"}  # thinking, top_k, cache_control all kept
    answer = resp.json()
    assert answer["id"].startswith("msg_fake") and answer["usage"]["service_tier"] == "standard"
    assert answer["content"] == [{"type": "text", "text": "Hello from fake Anthropic: then this"}]
    assert Decimal(resp.headers["x-gateway-cost-usd"]) == (
        Decimal(answer["usage"]["input_tokens"]) * 1 + Decimal(answer["usage"]["output_tokens"]) * 5) / 1_000_000


@needs_anthropic
def test_an_anthropic_deployments_stream_passes_through_and_is_billed(stack: Stack) -> None:
    uid, key = _funded(stack, "1.00")
    resp = httpx.post(f"{stack.url}/v1/messages", json={**RICH_BODY, "stream": True}, headers={"x-api-key": key},
                      timeout=20)
    assert resp.status_code == 200 and stack.requests_to("anthropic")[-1]["stream"] is True
    events = _sse_events(resp.content)
    names = [name for name, _ in events]
    assert "ping" in names and names[-1] == "message_stop"  # the upstream's own events
    assert events[0][1]["message"]["id"].startswith("msg_fake")
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "Hello from fake Anthropic: then this"
    usage = events[-2][1]["usage"]
    row = _requests(stack, uid, 1)[0]
    assert (row["endpoint"], row["stream"], row["status"]) == ("messages", True, 200)
    assert (row["input_tokens"], row["output_tokens"]) == (usage["input_tokens"], usage["output_tokens"])
    assert _balance(stack, uid) == Decimal("1.00") - Decimal(row["cost_usd"]) < Decimal("1.00")


@needs_anthropic
def test_the_anthropic_sdk_through_passthrough(stack: Stack) -> None:
    client = _client(stack)
    message = client.messages.create(model="claude-test", max_tokens=200, tools=[WEATHER_TOOL],
                                     messages=[{"role": "user", "content": "Weather in Oslo?"}])
    call = next(b for b in message.content if b.type == "tool_use")
    assert message.id.startswith("msg_fake") and call.id.startswith("toolu_fake")
    with client.messages.stream(model="claude-test", max_tokens=200, tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "-3C"}]},
    ]) as stream:
        final = stream.get_final_message()
    assert "-3C" in _text(final) and final.id.startswith("msg_fake")


@needs_anthropic
def test_a_passthrough_error_mid_stream_ends_with_the_gateways_error_event(stack: Stack) -> None:
    resp = httpx.post(f"{stack.url}/v1/messages", headers={"x-api-key": MASTER_KEY}, timeout=20, json={
        "model": "claude-test", "max_tokens": 50, "stream": True,
        "messages": [{"role": "user", "content": "go fake-error:midstream"}]})
    events = _sse_events(resp.content)
    assert events[0][1]["message"]["id"].startswith("msg_fake") and events[-1][0] == "error"
    assert events[-1][1]["error"]["code"] is not None  # the gateway's shape, not Anthropic's own event
    assert "message_stop" not in [name for name, _ in events]


@pytest.fixture(scope="module")
def fallback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    def edit(config: dict[str, Any]) -> None:
        config["providers"].append({"name": "ant-down", "kind": "anthropic", "api_base": "http://127.0.0.1:9/v1",
                                    "api_key": "x"})
        config["models"].append({"name": "claude-or-gpt", "deployments": [{"provider": "ant-down", "model": "c"}],
                                 "fallbacks": ["gpt-test"]})

    folder: Path = tmp_path_factory.mktemp("messages-fallback")
    with running_stack(folder, f"sqlite+aiosqlite:///{folder}/gw.db", edit=edit) as s:
        yield s


@needs_anthropic
def test_a_fallback_from_an_anthropic_deployment_is_encoded_as_messages(fallback: Stack) -> None:
    client = _client(fallback)
    raw = client.messages.with_raw_response.create(model="claude-or-gpt", max_tokens=50, messages=[
        {"role": "user", "content": "who answers?"}])
    assert raw.headers["x-gateway-deployment"] == "oai/gpt-4o-mini"
    assert "who answers?" in _text(raw.parse()) and raw.parse().usage.output_tokens > 0
    with client.messages.stream(model="claude-or-gpt", max_tokens=50,
                                messages=[{"role": "user", "content": "who streams?"}]) as stream:
        assert stream.response.headers["x-gateway-deployment"] == "oai/gpt-4o-mini"
        final = stream.get_final_message()
    assert "who streams?" in _text(final) and final.stop_reason == "end_turn"


@needs_anthropic
def test_a_passthrough_answer_is_cached_and_replayed_in_both_forms(cached: Stack) -> None:
    client = _client(cached)
    question: Any = [{"role": "user", "content": f"claude, cache me {uuid.uuid4().hex}"}]
    miss = client.messages.with_raw_response.create(model="claude-test", max_tokens=50, messages=question)
    hit = client.messages.with_raw_response.create(model="claude-test", max_tokens=50, messages=question)
    assert (miss.headers["x-gateway-cache"], hit.headers["x-gateway-cache"]) == ("MISS", "HIT")
    assert miss.parse().id.startswith("msg_fake")
    assert _text(hit.parse()) == _text(miss.parse())
    assert hit.parse().usage.output_tokens == miss.parse().usage.output_tokens
    with client.messages.stream(model="claude-test", max_tokens=50, messages=question) as stream:
        replayed = stream.get_final_message()
    assert _text(replayed) == _text(miss.parse())


@needs_anthropic
def test_an_answer_without_usage_is_charged_from_the_estimate(stack: Stack) -> None:
    uid, key = _funded(stack, "1.00")
    resp = httpx.post(f"{stack.url}/v1/messages", headers={"x-api-key": key}, timeout=20, json={
        "model": "claude-test", "max_tokens": 50, "messages": [{"role": "user", "content": "fake-error:nousage"}]})
    assert resp.status_code == 200 and "usage" not in resp.json()
    row = _requests(stack, uid, 1)[0]
    assert row["input_tokens"] > 0 and row["output_tokens"] > 0  # the prompt's and the answer's estimate
    assert Decimal(row["cost_usd"]) > 0 and _balance(stack, uid) == Decimal("1.00") - Decimal(row["cost_usd"])


# ------------------------------------------------------------ token counting

@needs_anthropic
def test_count_tokens_asks_the_anthropic_deployment(stack: Stack) -> None:
    from tests.fakes.anthropic_server import prompt_tokens

    messages: Any = [{"role": "user", "content": "how many tokens is this?"}]
    before = len(stack.fakes["anthropic"].state.counted)
    counted = _client(stack).messages.with_raw_response.count_tokens(
        model="claude-test", system="Be brief.", messages=messages, tools=[WEATHER_TOOL])
    assert counted.headers["x-gateway-token-count"] == "exact"
    sent = stack.fakes["anthropic"].state.counted[before:]
    assert sent == [{"model": "claude-haiku-4-5", "system": "Be brief.", "messages": messages,
                     "tools": [WEATHER_TOOL]}]
    assert counted.parse().input_tokens == prompt_tokens(sent[0])


def test_count_tokens_estimates_for_other_models_and_answers_claude_codes_beta_path(stack: Stack) -> None:
    short = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    long = {"model": "gpt-test", "messages": [{"role": "user", "content": "a much longer question " * 50}]}
    got = [httpx.post(f"{stack.url}/v1/messages/count_tokens", params={"beta": "true"}, json=body,
                      headers={"x-api-key": MASTER_KEY}) for body in (short, long)]
    assert [r.status_code for r in got] == [200, 200]
    assert [r.headers["x-gateway-token-count"] for r in got] == ["estimate", "estimate"]
    assert 0 < got[0].json()["input_tokens"] < got[1].json()["input_tokens"]
    assert set(got[0].json()) == {"input_tokens"}


def test_count_tokens_checks_the_caller_and_the_model(stack: Stack) -> None:
    url = f"{stack.url}/v1/messages/count_tokens"
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json={**body, "model": "nope"}, headers={"x-api-key": MASTER_KEY}).status_code == 404
    user = httpx.post(f"{stack.url}/admin/users", json={"email": f"ct{time.time_ns()}@example.com",
                                                        "allowed_models": ["mock"], "rpm": 1}, headers=AUTH).json()
    key = httpx.post(f"{stack.url}/admin/users/{user['id']}/keys", json={"name": "c"}, headers=AUTH).json()["key"]
    refused = httpx.post(url, json=body, headers={"x-api-key": key})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    # Counting is free and outside the rate limits: an rpm of 1 still allows one message after many counts.
    for _ in range(5):
        assert httpx.post(url, json={**body, "model": "mock"}, headers={"x-api-key": key}).status_code == 200
    assert _client(stack, key).messages.create(model="mock", max_tokens=10, messages=body["messages"]).content


@needs_anthropic
def test_count_tokens_falls_back_to_the_estimate_when_anthropic_is_down(fallback: Stack) -> None:
    resp = httpx.post(f"{fallback.url}/v1/messages/count_tokens", headers={"x-api-key": MASTER_KEY},
                      json={"model": "claude-or-gpt", "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == 200 and resp.headers["x-gateway-token-count"] == "estimate"
    assert resp.json()["input_tokens"] > 0


@needs_anthropic
def test_what_only_anthropic_takes_reaches_claude_and_is_refused_elsewhere(stack: Stack) -> None:
    body = {"max_tokens": 50, "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "a memo"}},
                {"type": "text", "text": "summarise the memo"}]}]}
    headers = {"x-api-key": MASTER_KEY}
    claude = httpx.post(f"{stack.url}/v1/messages", json={**body, "model": "claude-test"}, headers=headers)
    assert claude.status_code == 200, claude.text
    assert stack.requests_to("anthropic")[-1] == {**body, "model": "claude-haiku-4-5"}
    other = httpx.post(f"{stack.url}/v1/messages", json={**body, "model": "gpt-test"}, headers=headers)
    assert other.status_code == 400
    assert (other.json()["error"]["param"], other.json()["error"]["code"]) == ("tools[0].type", "unsupported_value")


@needs_anthropic
def test_content_only_claude_reads_is_reserved_for(stack: Stack) -> None:
    """A document is not in the canonical messages, but Anthropic reads it:
    the reservation must still cover it (its bytes bound its tokens)."""
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "memo " * 10_000}}
    body = {"model": "claude-test", "max_tokens": 100, "messages": [
        {"role": "user", "content": [document, {"type": "text", "text": "summarise"}]}]}
    _, poor = _funded(stack, "0.03")  # the 50 kB document alone may cost $0.05 at $1 per million tokens
    refused = httpx.post(f"{stack.url}/v1/messages", json=body, headers={"x-api-key": poor}, timeout=20)
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "insufficient_quota"
    _, rich = _funded(stack, "1.00")
    assert httpx.post(f"{stack.url}/v1/messages", json=body, headers={"x-api-key": rich}, timeout=20).status_code == 200
