"""Bad input and failing upstreams: the right status, in SPEC §4's shape,
never a traceback, a provider key, or an internal address."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import AUTH, MASTER_KEY, Stack

USER = [{"role": "user", "content": "hi"}]


def post(stack: Stack, body: Any, *, raw: bytes | None = None, headers: dict[str, str] | None = None,
         path: str = "/v1/chat/completions") -> httpx.Response:
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(f"{stack.url}{path}", content=content, timeout=10,
                      headers={"content-type": "application/json", **AUTH, **(headers or {})})


def assert_error(resp: httpx.Response, status: int, type_: str, code: str | None,
                 param: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == type_ and err["code"] == code
    if param is not None:
        assert err["param"] == param
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in resp.text
    assert resp.headers["x-request-id"] if resp.request.url.path.startswith("/v1") else True
    return err  # type: ignore[no-any-return]


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"model": "gpt-test", "messages": [', None),
    (b"not json at all", None),
    (b"", None),
])
def test_invalid_json(stack: Stack, raw: bytes, param: str | None) -> None:
    assert_error(post(stack, None, raw=raw), 400, "invalid_request_error", "invalid_json")


@pytest.mark.parametrize(("body", "code", "param"), [
    ({"messages": USER}, "missing_field", "model"),
    ({"model": "gpt-test"}, "missing_field", "messages"),
    ({"model": "gpt-test", "messages": []}, "invalid_value", "messages"),
    ({"model": "gpt-test", "messages": [{"content": "x"}]}, "missing_field", "messages[0].role"),
    ({"model": "gpt-test", "messages": [{"role": "wizard", "content": "x"}]}, "invalid_value",
     "messages[0].role"),
    ({"model": "gpt-test", "messages": "hello"}, "invalid_type", "messages"),
    ({"model": 42, "messages": USER}, "invalid_type", "model"),
    ({"model": "gpt-test", "messages": USER, "temperature": "hot"}, "invalid_type", "temperature"),
    ({"model": "gpt-test", "messages": USER, "temperature": 3}, "invalid_value", "temperature"),
    ({"model": "gpt-test", "messages": USER, "max_tokens": 0}, "invalid_value", "max_tokens"),
    ({"model": "gpt-test", "messages": USER, "stream": "yes"}, "invalid_type", "stream"),
    ({"model": "gpt-test", "messages": USER, "tools": [{"type": "function"}]}, "missing_field",
     "tools[0].function"),
    ({"model": "gpt-test", "messages": [{"role": "tool", "content": "x"}]}, "missing_field",
     "messages[0].tool_call_id"),
    ({"model": "gpt-test", "messages": USER, "tool_choice": "sometimes"}, "invalid_value", "tool_choice"),
    ([1, 2, 3], "invalid_json", None),
])
def test_schema_violations(stack: Stack, body: Any, code: str, param: str | None) -> None:
    assert_error(post(stack, body), 400, "invalid_request_error", code, param)


def test_embeddings_validation(stack: Stack) -> None:
    resp = post(stack, {"model": "emb-test"}, path="/v1/embeddings")
    assert_error(resp, 400, "invalid_request_error", "missing_field", "input")
    resp = post(stack, {"model": "emb-test", "input": [{"a": 1}]}, path="/v1/embeddings")
    assert_error(resp, 400, "invalid_request_error", "invalid_type", "input")


def test_unknown_model(stack: Stack) -> None:
    resp = post(stack, {"model": "gpt-99", "messages": USER})
    assert_error(resp, 404, "invalid_request_error", "model_not_found", "model")
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=MASTER_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-99", messages=USER)  # type: ignore[arg-type]


def test_body_over_limit(stack: Stack) -> None:
    big = {"model": "gpt-test", "messages": [{"role": "user", "content": "x" * 70_000}]}
    assert_error(post(stack, big), 413, "invalid_request_error", "request_too_large")


def test_body_over_limit_chunked(stack: Stack) -> None:
    def gen() -> Any:
        for _ in range(100):
            yield b"x" * 1000

    resp = httpx.post(f"{stack.url}/v1/chat/completions", content=gen(), headers=AUTH, timeout=10)
    assert_error(resp, 413, "invalid_request_error", "request_too_large")


def test_unknown_path_and_method(stack: Stack) -> None:
    resp = httpx.get(f"{stack.url}/v1/nothing-here")
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "invalid_request_error"
    resp = httpx.get(f"{stack.url}/v1/chat/completions")
    assert resp.status_code == 405 and "error" in resp.json()


@pytest.mark.parametrize(("steer", "status", "type_", "code"), [
    ("fake-error:429", 429, "rate_limit_error", "rate_limit_exceeded"),
    ("fake-error:500", 502, "upstream_error", "upstream_error"),
    ("fake-error:503", 502, "upstream_error", "upstream_error"),
    ("fake-error:garbage", 502, "upstream_error", "upstream_error"),
])
def test_upstream_failures(stack: Stack, steer: str, status: int, type_: str, code: str) -> None:
    resp = post(stack, {"model": "gpt-test", "messages": [{"role": "user", "content": steer}]})
    assert_error(resp, status, type_, code)
    if status == 429:
        assert int(resp.headers["retry-after"]) >= 1


def test_provider_4xx_passes_through(stack: Stack) -> None:
    resp = post(stack, {"model": "gpt-test", "messages": [{"role": "user", "content": "fake-error:400"}]})
    err = assert_error(resp, 400, "invalid_request_error", "context_length_exceeded", "messages")
    assert "maximum context length" in err["message"]


def test_bad_provider_key_is_502_without_the_key(stack: Stack) -> None:
    resp = post(stack, {"model": "badkey-test", "messages": USER})
    err = assert_error(resp, 502, "upstream_error", "upstream_error")
    assert "sk-" not in resp.text and "127.0.0.1" not in resp.text
    assert "credentials" in err["message"]


def test_unreachable_provider_is_502_without_address(stack: Stack) -> None:
    resp = post(stack, {"model": "down-test", "messages": USER})
    assert_error(resp, 502, "upstream_error", "upstream_error")
    assert "127.0.0.1" not in resp.text and ":9" not in resp.json()["error"]["message"]


def test_timeout_is_504(stack: Stack) -> None:
    started = time.monotonic()
    resp = post(stack, {"model": "slow-test", "messages": [{"role": "user", "content": "fake-error:hang"}]})
    assert_error(resp, 504, "timeout_error", "upstream_timeout")
    assert time.monotonic() - started < 5


def test_stream_error_before_first_byte_is_plain_http_error(stack: Stack) -> None:
    body = {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "fake-error:429"}]}
    assert_error(post(stack, body), 429, "rate_limit_error", "rate_limit_exceeded")


@pytest.mark.parametrize("model", ["gpt-test", "mock"])
def test_stream_error_after_first_byte(stack: Stack, model: str) -> None:
    steer = "fake-error:midstream" if model != "mock" else "mock-error:midstream"
    body = {"model": model, "stream": True,
            "messages": [{"role": "user", "content": f"one two three four {steer}"}]}
    resp = post(stack, body)
    assert resp.status_code == 200
    frames = [f for f in resp.content.split(b"\n\n") if f]
    assert b"[DONE]" not in resp.content
    last = json.loads(frames[-1][6:])
    assert set(last) == {"error"} and last["error"]["type"] == "upstream_error"
    assert len(frames) >= 2


def test_client_disconnect_cancels_upstream(stack: Stack) -> None:
    fake = stack.fakes["openai"]
    fake.state.stream_cancelled_at = None
    body = {"model": "gpt-test", "stream": True,
            "messages": [{"role": "user", "content": "fake-error:slowstream"}]}
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", json=body, headers=AUTH, timeout=10) as resp:
        for line in resp.iter_lines():
            if line.startswith("data:"):
                break
        closed_at = time.monotonic()
    deadline = closed_at + 3
    while fake.state.stream_cancelled_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.state.stream_cancelled_at is not None, "upstream stream was not cancelled"
    assert fake.state.stream_cancelled_at - closed_at < 1.0


def test_passthrough_rewrites_only_model(stack: Stack) -> None:
    body = {"model": "gpt-test", "messages": USER, "logit_bias": {"50256": -100}, "metadata": {"k": "v"},
            "temperature": 0.5}
    assert post(stack, body).status_code == 200
    sent = stack.requests_to("openai")[-1]["body"]
    assert sent == {**body, "model": "gpt-4o-mini"}


def test_request_id_propagates(stack: Stack) -> None:
    resp = post(stack, {"model": "gpt-test", "messages": USER}, headers={"x-request-id": "trace-123"})
    assert resp.headers["x-request-id"] == "trace-123"
    assert stack.requests_to("openai")[-1]["headers"]["x-request-id"] == "trace-123"


def test_openai_compatible_auth_header_query_and_extra_headers(stack: Stack) -> None:
    resp = post(stack, {"model": "azure-test", "messages": USER})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-gateway-deployment"] == "azure/gpt-4o-deployment"
    seen = stack.requests_to("openai")[-1]
    assert seen["query"] == {"api-version": "2024-10-21"}
    assert seen["headers"]["api-key"] == "sk-test-openai" and "authorization" not in seen["headers"]
    assert seen["headers"]["x-tenant"] == "t1"
    assert seen["body"]["model"] == "gpt-4o-deployment"


TRANSLATED = [m for m in ("claude-test", "gemini-test") if m in __import__(
    "tests.e2e.test_openai_sdk", fromlist=["CHAT_MODELS"]).CHAT_MODELS]


@pytest.mark.parametrize("model", TRANSLATED)
@pytest.mark.parametrize(("steer", "status", "type_"), [
    ("fake-error:429", 429, "rate_limit_error"),
    ("fake-error:500", 502, "upstream_error"),
])
def test_translated_upstream_failures(stack: Stack, model: str, steer: str, status: int, type_: str) -> None:
    for stream in (False, True):
        body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": steer}]}
        resp = post(stack, body)
        assert resp.status_code == status, resp.text
        assert resp.json()["error"]["type"] == type_


@pytest.mark.parametrize("model", TRANSLATED)
def test_translated_provider_4xx_keeps_message(stack: Stack, model: str) -> None:
    resp = post(stack, {"model": model, "messages": [{"role": "user", "content": "fake-error:400"}]})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert resp.json()["error"]["message"]


@pytest.mark.parametrize("model", TRANSLATED)
def test_translated_stream_error_after_first_byte(stack: Stack, model: str) -> None:
    body = {"model": model, "stream": True,
            "messages": [{"role": "user", "content": "one two three four fake-error:midstream"}]}
    resp = post(stack, body)
    assert resp.status_code == 200
    frames = [f for f in resp.content.split(b"\n\n") if f]
    assert b"[DONE]" not in resp.content and len(frames) >= 2
    assert set(json.loads(frames[-1][6:])) == {"error"}


def test_anthropic_gets_max_tokens_from_model_config(stack: Stack) -> None:
    if "claude-test" not in TRANSLATED:
        pytest.skip("no fake Anthropic server")
    assert post(stack, {"model": "claude-test", "messages": USER}).status_code == 200
    assert stack.requests_to("anthropic")[-1]["max_tokens"] == 1024
    assert post(stack, {"model": "claude-test", "messages": USER, "max_tokens": 77}).status_code == 200
    assert stack.requests_to("anthropic")[-1]["max_tokens"] == 77


@pytest.mark.parametrize("model", [m.replace("-test", "-badkey") for m in TRANSLATED])
def test_bad_provider_key_through_translated_kinds(stack: Stack, model: str) -> None:
    resp = post(stack, {"model": model, "messages": USER})
    err = assert_error(resp, 502, "upstream_error", "upstream_error")
    assert "credentials" in err["message"] and "wrong-key" not in resp.text
