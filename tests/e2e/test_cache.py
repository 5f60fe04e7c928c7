"""The response cache through the HTTP API and the `openai` SDK (SPEC §6):
miss then hit, streamed requests replayed from plain answers and the
reverse, Cache-Control, TTL, LRU eviction, per-user scope, what is never
cached, and what a hit costs."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import AUTH, Stack, running_stack
from tests.openapi import validate


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("cache")
    with running_stack(folder, f"sqlite+aiosqlite:///{folder}/gw.db", {"cache": {"enabled": True}}) as s:
        yield s


def user_key(stack: Stack, credit: str | None = None) -> tuple[str, str]:
    user = httpx.post(f"{stack.url}/admin/users", json={"email": f"c{time.time_ns()}@example.com"}, headers=AUTH)
    uid = user.json()["id"]
    if credit:
        assert httpx.post(f"{stack.url}/admin/users/{uid}/credits", json={"amount_usd": credit},
                          headers=AUTH).status_code == 201
    key = httpx.post(f"{stack.url}/admin/users/{uid}/keys", json={"name": "c"}, headers=AUTH).json()["key"]
    return uid, key


def ask(stack: Stack, key: str, text: str, model: str = "compat-test", headers: dict[str, str] | None = None,
        **extra: Any) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/chat/completions",
                      json={"model": model, "messages": [{"role": "user", "content": text}], **extra},
                      headers={"authorization": f"Bearer {key}", **(headers or {})}, timeout=20)


def fresh() -> str:
    return f"question {uuid.uuid4().hex}"


def upstream_calls(stack: Stack, text: str) -> int:
    return sum(1 for r in stack.requests_to("openai")
               if any(m.get("content") == text for m in r["body"].get("messages", [])))


def test_miss_then_hit_same_bytes_no_upstream_call(cached: Stack) -> None:
    _, key = user_key(cached)
    q = fresh()
    first = ask(cached, key, q)
    assert first.status_code == 200 and first.headers["x-gateway-cache"] == "MISS"
    second = ask(cached, key, q)
    assert second.status_code == 200 and second.headers["x-gateway-cache"] == "HIT"
    assert second.content == first.content
    assert second.headers["x-gateway-deployment"] == first.headers["x-gateway-deployment"]
    assert upstream_calls(cached, q) == 1
    # Anything that changes the answer is a different entry; user/stream_options are not.
    assert ask(cached, key, q, temperature=0.5).headers["x-gateway-cache"] == "MISS"
    assert ask(cached, key, q, user="someone").headers["x-gateway-cache"] == "HIT"


def test_streamed_request_replays_a_plain_answer_through_the_sdk(cached: Stack) -> None:
    _, key = user_key(cached)
    q = fresh()
    client = openai.OpenAI(base_url=f"{cached.url}/v1", api_key=key, max_retries=0)
    plain = client.chat.completions.create(model="compat-test", messages=[{"role": "user", "content": q}])
    raw = client.chat.completions.with_raw_response.create(
        model="compat-test", messages=[{"role": "user", "content": q}], stream=True,
        stream_options={"include_usage": True})
    assert raw.headers["x-gateway-cache"] == "HIT"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens  # type: ignore[union-attr]
    assert upstream_calls(cached, q) == 1


def test_sse_replay_is_openai_framing_byte_for_byte(cached: Stack) -> None:
    _, key = user_key(cached)
    q = fresh()
    ask(cached, key, q)
    with httpx.stream("POST", f"{cached.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": "compat-test", "messages": [{"role": "user", "content": q}],
                            "stream": True}) as r:
        assert r.headers["x-gateway-cache"] == "HIT"
        assert r.headers["content-type"].startswith("text/event-stream")
        body = r.read()
    events = body.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    assert all(e.startswith(b"data: {") for e in events[:-2])
    for event in events[:-2]:
        validate(json.loads(event[len(b"data: "):]), "CreateChatCompletionStreamResponse")


def test_a_streamed_answer_fills_the_cache_for_plain_and_streamed_requests(cached: Stack) -> None:
    _, key = user_key(cached)
    q = fresh()
    client = openai.OpenAI(base_url=f"{cached.url}/v1", api_key=key, max_retries=0)
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="compat-test", messages=[{"role": "user", "content": q}], stream=True) if c.choices)
    plain = client.chat.completions.with_raw_response.create(
        model="compat-test", messages=[{"role": "user", "content": q}])
    assert plain.headers["x-gateway-cache"] == "HIT"
    validate(json.loads(plain.content), "CreateChatCompletionResponse")
    completion = plain.parse()
    assert completion.choices[0].message.content == streamed
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert upstream_calls(cached, q) == 1


def test_tool_calls_survive_the_round_trip(cached: Stack) -> None:
    _, key = user_key(cached)
    q = fresh()
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    client = openai.OpenAI(base_url=f"{cached.url}/v1", api_key=key, max_retries=0)
    live = list(client.chat.completions.create(model="compat-test", messages=[{"role": "user", "content": q}],
                                               tools=tools, stream=True))  # type: ignore[arg-type]
    hit = client.chat.completions.create(model="compat-test", messages=[{"role": "user", "content": q}],
                                         tools=tools)  # type: ignore[arg-type]
    call = hit.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""  # type: ignore[index,union-attr]
                   for c in live if c.choices and c.choices[0].delta.tool_calls) == call.function.arguments  # type: ignore[union-attr]
    assert hit.choices[0].finish_reason == "tool_calls"


def test_cache_control_no_cache_refreshes_and_no_store_keeps_out(cached: Stack) -> None:
    _, key = user_key(cached)
    q = fresh()
    first = ask(cached, key, q)
    bypass = ask(cached, key, q, headers={"cache-control": "no-cache"})
    assert bypass.headers["x-gateway-cache"] == "BYPASS"
    assert bypass.json()["id"] != first.json()["id"]  # the upstream answered again
    again = ask(cached, key, q)
    assert again.headers["x-gateway-cache"] == "HIT" and again.json()["id"] == bypass.json()["id"]

    q2 = fresh()
    nostore = ask(cached, key, q2, headers={"cache-control": "no-store"})
    assert nostore.headers["x-gateway-cache"] == "BYPASS"
    assert ask(cached, key, q2).headers["x-gateway-cache"] == "MISS"
    assert upstream_calls(cached, q) == 2 and upstream_calls(cached, q2) == 2


def test_user_scope_keeps_entries_private(cached: Stack) -> None:
    _, alice = user_key(cached)
    _, bob = user_key(cached)
    q = fresh()
    assert ask(cached, alice, q).headers["x-gateway-cache"] == "MISS"
    assert ask(cached, bob, q).headers["x-gateway-cache"] == "MISS"
    assert ask(cached, alice, q).headers["x-gateway-cache"] == "HIT"


def test_errors_and_cut_streams_are_never_cached(cached: Stack) -> None:
    _, key = user_key(cached)
    q = f"{fresh()} fake-error:500"
    assert ask(cached, key, q).status_code == 502
    r = ask(cached, key, q)
    assert r.status_code == 502 and r.headers["x-gateway-cache"] == "MISS"
    cut = f"{fresh()} fake-error:midstream"
    for _ in range(2):
        with httpx.stream("POST", f"{cached.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                          json={"model": "compat-test", "messages": [{"role": "user", "content": cut}],
                                "stream": True}) as s:
            assert s.headers["x-gateway-cache"] == "MISS"
            assert b"[DONE]" not in s.read()


def test_embeddings_are_cached(cached: Stack) -> None:
    _, key = user_key(cached, credit="1.00")
    text = fresh()
    client = openai.OpenAI(base_url=f"{cached.url}/v1", api_key=key, max_retries=0)
    first = client.embeddings.with_raw_response.create(model="emb-test", input=[text])
    second = client.embeddings.with_raw_response.create(model="emb-test", input=[text])
    assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == ("MISS", "HIT")
    assert second.parse().data[0].embedding == first.parse().data[0].embedding


def test_a_hit_costs_nothing_and_is_recorded_as_a_hit(cached: Stack) -> None:
    uid, key = user_key(cached, credit="1.00")
    q = fresh()
    miss = ask(cached, key, q, model="gpt-test")
    assert Decimal(miss.headers["x-gateway-cost-usd"]) > 0
    balance = Decimal(httpx.get(f"{cached.url}/admin/users/{uid}", headers=AUTH).json()["balance_usd"])
    hit = ask(cached, key, q, model="gpt-test")
    assert hit.headers["x-gateway-cache"] == "HIT"
    assert Decimal(hit.headers["x-gateway-cost-usd"]) == 0
    assert Decimal(httpx.get(f"{cached.url}/admin/users/{uid}", headers=AUTH).json()["balance_usd"]) == balance
    deadline = time.monotonic() + 5
    while True:
        rows = httpx.get(f"{cached.url}/admin/requests", params={"user_id": uid}, headers=AUTH).json()["data"]
        if len(rows) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [r["cache"] for r in rows] == ["HIT", "MISS"]


def _small_stack(tmp_path: Path, **cache: Any) -> Any:
    return running_stack(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db", {"cache": {"enabled": True, **cache}})


def test_ttl_expiry_and_lru_eviction(tmp_path: Path) -> None:
    with _small_stack(tmp_path, ttl_s=1, max_entries=2) as s:
        _, key = user_key(s)
        a, b, c = fresh(), fresh(), fresh()
        for q in (a, b):
            ask(s, key, q)
        assert ask(s, key, a).headers["x-gateway-cache"] == "HIT"  # a is now the most recent
        ask(s, key, c)  # evicts b, the least recently used
        assert ask(s, key, b).headers["x-gateway-cache"] == "MISS"
        time.sleep(1.1)
        assert ask(s, key, c).headers["x-gateway-cache"] == "MISS"  # expired


def test_global_scope_shares_entries_and_hits_can_be_charged(tmp_path: Path) -> None:
    with _small_stack(tmp_path, scope="global", charge_hits=True) as s:
        _, alice = user_key(s, credit="1.00")
        bob_id, bob = user_key(s, credit="1.00")
        q = fresh()
        miss = ask(s, alice, q, model="gpt-test")
        hit = ask(s, bob, q, model="gpt-test")
        assert hit.headers["x-gateway-cache"] == "HIT"
        assert hit.headers["x-gateway-cost-usd"] == miss.headers["x-gateway-cost-usd"]
        balance = Decimal(httpx.get(f"{s.url}/admin/users/{bob_id}", headers=AUTH).json()["balance_usd"])
        assert balance == Decimal("1.00") - Decimal(hit.headers["x-gateway-cost-usd"])
