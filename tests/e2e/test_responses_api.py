"""``/v1/responses`` end to end with the official ``openai`` SDK against a
live gateway, through every provider kind: an OpenAI deployment passed
through (the fake OpenAI's ``/v1/responses``), the others translated. Bodies
and every streamed event are checked against OpenAI's OpenAPI document."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import AUTH, MASTER_KEY, Stack, has_fake
from tests.e2e.test_admin_api import bearer, call, new_key, new_user
from tests.openapi import validate, validate_stream_event

MODELS = ["gpt-test", "compat-test", "mock"]
if has_fake("anthropic"):
    MODELS.append("claude-test")
if has_fake("gemini"):
    MODELS.append("gemini-test")

WEATHER: Any = {
    "type": "function", "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False},
    "strict": True,
}


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=MASTER_KEY, max_retries=0)


def _events(stack: Stack, body: dict[str, Any], key: str = MASTER_KEY) -> list[dict[str, Any]]:
    """The raw SSE events of a streamed request, each checked against the schema."""
    with httpx.stream("POST", f"{stack.url}/v1/responses", json={**body, "stream": True}, timeout=30,
                      headers=bearer(key)) as resp:
        assert resp.status_code == 200, resp.read()
        text = resp.read().decode()
    events = []
    for frame in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines() if ": " in line)
        if "data" in lines:
            data = json.loads(lines["data"])
            assert lines.get("event") == data["type"]
            validate_stream_event(data)
            events.append(data)
    return events


@pytest.mark.parametrize("model", MODELS)
def test_create_answers_a_response_object(client: openai.OpenAI, model: str) -> None:
    raw = client.responses.with_raw_response.create(
        model=model, instructions="Be brief.", input="Say hello", max_output_tokens=200, metadata={"k": "v"})
    validate(json.loads(raw.content), "Response")
    response = raw.parse()
    assert response.status == "completed" and "Say hello" in response.output_text
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert raw.headers["x-gateway-deployment"].split("/")[0] in {"oai", "compat", "mock", "ant", "gem"}


@pytest.mark.parametrize("model", MODELS)
def test_stream_is_openais_event_sequence(stack: Stack, client: openai.OpenAI, model: str) -> None:
    events = _events(stack, {"model": model, "input": "Tell me about streams"})
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    for kind in ("response.output_item.added", "response.content_part.added", "response.output_text.delta",
                 "response.output_text.done", "response.output_item.done"):
        assert kind in kinds
    assert [e["sequence_number"] for e in events] == sorted(e["sequence_number"] for e in events)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert "Tell me about streams" in text
    with client.responses.stream(model=model, input="Tell me about streams") as stream:
        final = stream.get_final_response()
    assert final.output_text.strip() == text.strip()
    assert final.usage is not None and final.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_function_call_round_trip(stack: Stack, client: openai.OpenAI, model: str) -> None:
    first = client.responses.create(model=model, input="Weather in Paris?", tools=[WEATHER])
    [call_item] = [i for i in first.output if i.type == "function_call"]
    assert call_item.name == "get_weather" and "city" in json.loads(call_item.arguments)
    second = client.responses.create(model=model, previous_response_id=first.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": call_item.call_id, "output": "sunny, 21 C"}])
    assert "sunny, 21 C" in second.output_text
    events = _events(stack, {"model": model, "input": "Weather in Paris?", "tools": [WEATHER]})
    kinds = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds


def test_previous_response_id_crosses_providers(stack: Stack, client: openai.OpenAI) -> None:
    chain = [m for m in ("mock", "claude-test", "gemini-test", "gpt-test") if m in MODELS]
    previous = None
    for i, model in enumerate(chain):
        response = client.responses.create(model=model, input=f"turn {i}", previous_response_id=previous)
        assert response.status == "completed"
        previous = response.id
    # The OpenAI deployment got the whole conversation, never the gateway's id (the fake refuses ids).
    sent = stack.fakes["openai"].state.requests[-1]["body"]
    assert "previous_response_id" not in sent
    texts = [json.dumps(item) for item in sent["input"]]
    assert all(any(f"turn {i}" in t for t in texts) for i in range(len(chain)))
    items = client.responses.input_items.list(previous, order="asc").data
    assert len(items) == 2 * len(chain) - 1 and all(item.id for item in items)


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    class City(BaseModel):
        name: str
        population: int

    for model in ("mock", "gpt-test"):
        parsed = client.responses.parse(model=model, input="A city, please", text_format=City).output_parsed
        assert isinstance(parsed, City)


def test_retrieve_delete_and_store_false(client: openai.OpenAI) -> None:
    response = client.responses.create(model="mock", input="keep me")
    assert client.responses.retrieve(response.id).output_text == response.output_text
    assert client.responses.delete(response.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    unstored = client.responses.create(model="mock", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="mock", input="more", previous_response_id=unstored.id)


def test_another_users_response_is_not_found_and_charges_are_exact(stack: Stack) -> None:
    users = [new_user(stack) for _ in range(2)]
    for user in users:
        assert call(stack, "POST", f"/admin/users/{user['id']}/credits", {"amount_usd": "1"}).status_code == 201
    keys = [new_key(stack, u["id"])["key"] for u in users]
    mine, theirs = (openai.OpenAI(base_url=f"{stack.url}/v1", api_key=k, max_retries=0) for k in keys)
    raw = mine.responses.with_raw_response.create(model="gpt-test", input="hello")
    response = raw.parse()
    cost = Decimal(raw.headers["x-gateway-cost-usd"])
    assert cost > 0
    balance = Decimal(call(stack, "GET", f"/admin/users/{users[0]['id']}").json()["balance_usd"])
    assert balance == Decimal(1) - cost
    assert mine.responses.retrieve(response.id).id == response.id
    for attempt in (lambda: theirs.responses.retrieve(response.id),
                    lambda: theirs.responses.delete(response.id),
                    lambda: theirs.responses.input_items.list(response.id),
                    lambda: theirs.responses.create(model="mock", input="x", previous_response_id=response.id)):
        with pytest.raises(openai.NotFoundError):
            attempt()


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"max_output_tokens": 10**12}, "max_output_tokens"),
    ({"temperature": 3}, "temperature"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
    ({"background": True}, "background"),
])
def test_refusals_name_the_param(stack: Stack, body: dict[str, Any], param: str) -> None:
    resp = httpx.post(f"{stack.url}/v1/responses", json={"model": "mock", "input": "hi", **body}, headers=AUTH)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


def test_built_in_tools_pass_through_to_openai(stack: Stack) -> None:
    resp = httpx.post(f"{stack.url}/v1/responses", headers=AUTH, json={
        "model": "gpt-test", "input": "hi", "tools": [{"type": "web_search"}], "include": ["x"]})
    assert resp.status_code == 200, resp.text
    assert stack.fakes["openai"].state.requests[-1]["body"]["tools"] == [{"type": "web_search"}]


def test_a_failure_mid_stream_is_an_error_then_response_failed(stack: Stack) -> None:
    events = _events(stack, {"model": "mock", "input": "mock-error:midstream please"})
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["status"] == "failed"


def test_reasoning_effort_becomes_gemini_thinking_budget(stack: Stack, client: openai.OpenAI) -> None:
    """``reasoning.effort`` where the provider has it: Gemini's thinking
    budget, sized by the effort (Anthropic's extended thinking: unit tests)."""
    made = client.responses.create(model="gemini-test", input="Think first.", reasoning={"effort": "high"})
    assert made.status == "completed"
    sent = stack.fakes["gemini"].state.requests[-1]
    assert sent["body"]["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 24576}
