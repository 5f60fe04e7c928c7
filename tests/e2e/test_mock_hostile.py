"""The built-in ``mock`` model under hostile input, through the live gateway
(issue 18): it validates what it is given and caps what it answers like a
real provider, and one caller's steered failures do not take it away from
everyone else."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import AUTH, Stack, running_stack

THRESHOLD = 3  # the circuit breaker's failure threshold in this stack
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder: Path = tmp_path_factory.mktemp("mock-hostile")
    extra = {"max_request_bytes": 8 * 1024 * 1024,
             "routing": {"retries": 0, "circuit_breaker": {"failure_threshold": THRESHOLD, "cooldown_s": 300}}}
    with running_stack(folder, f"sqlite+aiosqlite:///{folder}/gw.db", extra) as s:
        yield s


def post(stack: Stack, path: str, body: Any, key: str | None = None, timeout: float = 60) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else AUTH
    return httpx.post(f"{stack.url}{path}", content=json.dumps(body).encode(), timeout=timeout,
                      headers={"content-type": "application/json", **headers})


def user_key(stack: Stack) -> str:
    user = httpx.post(f"{stack.url}/admin/users", json={"email": f"m{time.time_ns()}@example.com"}, headers=AUTH)
    assert user.status_code == 201, user.text
    key = httpx.post(f"{stack.url}/admin/users/{user.json()['id']}/keys", json={"name": "k"}, headers=AUTH)
    assert key.status_code == 201, key.text
    return str(key.json()["key"])


def _deep(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


MALFORMED = [{"type": "object", "required": 5}, {"type": "string", "enum": 5},
             {"type": "object", "properties": [1]}, _deep(200)]


@pytest.mark.parametrize("schema", MALFORMED, ids=["required", "enum", "properties", "deep"])
def test_a_malformed_schema_is_a_400_naming_it_in_each_dialect(hostile: Stack, schema: Any) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    chat = [({"tools": [tool]}, "tools[0].function.parameters"),
            ({"response_format": fmt}, "response_format.json_schema.schema")]
    for extra, param in chat:
        resp = post(hostile, "/v1/chat/completions", {"model": "mock", "messages": USER, **extra})
        assert resp.status_code == 400, resp.text
        assert resp.headers["x-request-id"]
        err = resp.json()["error"]
        assert (err["type"], err["param"]) == ("invalid_request_error", param) and "Invalid schema" in err["message"]
    messages = [{"tools": [{"name": "f", "input_schema": schema}]},
                {"output_config": {"format": {"type": "json_schema", "schema": schema}}}]
    for extra in messages:
        resp = post(hostile, "/v1/messages", {"model": "mock", "max_tokens": 50, "messages": USER, **extra})
        assert resp.status_code == 400, resp.text
        assert resp.headers["x-request-id"]
        body = resp.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert "Invalid schema" in body["error"]["message"]


def test_many_wide_embeddings_answer_and_health_stays_responsive(hostile: Stack) -> None:
    inputs = [f"text number {i}" for i in range(256)]  # × 8192 dimensions, the most the mock answers
    results: list[httpx.Response] = []

    def embed() -> None:
        results.append(post(hostile, "/v1/embeddings", {"model": "mock", "input": inputs, "dimensions": 8192}))

    workers = [threading.Thread(target=embed) for _ in range(3)]
    for w in workers:
        w.start()
    health = [httpx.get(f"{hostile.url}/health", timeout=10) for _ in range(5)]
    for w in workers:
        w.join()
    assert [h.status_code for h in health] == [200] * 5
    assert [r.status_code for r in results] == [200] * 3
    data = results[0].json()["data"]
    assert len(data) == 256 and {len(d["embedding"]) for d in data} == {8192}
    # Past the mock's cap (inputs × dimensions) it refuses, as a real provider caps a request.
    refused = post(hostile, "/v1/embeddings", {"model": "mock", "input": ["x"] * 2048, "dimensions": 8192})
    assert refused.status_code == 400 and refused.headers["x-request-id"]
    assert refused.json()["error"]["param"] == "dimensions"


def test_n_128_with_a_large_prompt_gets_a_bounded_answer(hostile: Stack) -> None:
    prompt = [{"role": "user", "content": "word " * 800_000}]  # 4 MB
    resp = post(hostile, "/v1/chat/completions", {"model": "mock", "messages": prompt, "n": 128})
    assert resp.status_code == 200, resp.text[:500]
    choices = resp.json()["choices"]
    assert len(choices) == 128 and {c["finish_reason"] for c in choices} == {"length"}
    assert sum(len(c["message"]["content"]) for c in choices) <= 256 * 1024
    assert len(resp.content) < 1024 * 1024
    # Streamed: the same bound on what it writes.
    long_word = [{"role": "user", "content": "x" * 4_000_000}]
    with httpx.stream("POST", f"{hostile.url}/v1/chat/completions", headers=AUTH, timeout=60,
                      json={"model": "mock", "messages": long_word, "n": 128, "stream": True}) as streamed:
        assert streamed.status_code == 200
        lines = [line for line in streamed.iter_lines() if line.startswith("data: {")]
    text = sum(len(c["delta"].get("content") or "") for line in lines for c in json.loads(line[6:])["choices"])
    assert 0 < text <= 256 * 1024


def test_one_callers_steered_failures_do_not_open_the_mock_for_others(hostile: Stack) -> None:
    steering, other = user_key(hostile), user_key(hostile)
    for _ in range(THRESHOLD + 2):
        failed = post(hostile, "/v1/chat/completions",
                      {"model": "mock", "messages": [{"role": "user", "content": "mock-error:500"}]}, steering)
        assert failed.status_code == 502, failed.text
    for _ in range(THRESHOLD + 1):  # failures after the first byte of a stream too
        with httpx.stream("POST", f"{hostile.url}/v1/chat/completions", timeout=30,
                          headers={"authorization": f"Bearer {steering}"},
                          json={"model": "mock", "stream": True,
                                "messages": [{"role": "user", "content": "mock-error:midstream and more"}]}) as s:
            assert s.status_code == 200
            assert any('"error"' in line for line in s.iter_lines())
    served = post(hostile, "/v1/chat/completions", {"model": "mock", "messages": USER}, other)
    assert served.status_code == 200, served.text
    assert served.json()["choices"][0]["message"]["content"] == "Mock reply: hi"
