"""Rate limits through the HTTP API, in process (SPEC §6, §8): per user,
per key, per model and global; headers on every response; 429 with
Retry-After; tokens corrected from real usage; the `openai` SDK's view."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import AUTH, MASTER_KEY, Stack, running_stack

HI = [{"role": "user", "content": "hi"}]


def user_and_key(stack: Stack, user: dict[str, object] | None = None,
                 key: dict[str, object] | None = None) -> tuple[str, str]:
    made = httpx.post(f"{stack.url}/admin/users", json={"email": f"l{time.time_ns()}@example.com", **(user or {})},
                      headers=AUTH)
    assert made.status_code == 201, made.text
    k = httpx.post(f"{stack.url}/admin/users/{made.json()['id']}/keys", json={"name": "l", **(key or {})},
                   headers=AUTH)
    assert k.status_code == 201, k.text
    return made.json()["id"], k.json()["key"]


def chat(stack: Stack, key: str, model: str = "compat-test", **extra: object) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/chat/completions", json={"model": model, "messages": HI, **extra},
                      headers={"authorization": f"Bearer {key}"}, timeout=20)


def test_user_rpm_counts_down_exactly_then_429_with_retry_after(stack: Stack) -> None:
    _, key = user_and_key(stack, {"rpm": 3})
    seen = []
    for _ in range(3):
        r = chat(stack, key)
        assert r.status_code == 200, r.text
        seen.append(r.headers["x-ratelimit-remaining-requests"])
        assert r.headers["x-ratelimit-limit-requests"] == "3"
    assert seen == ["2", "1", "0"]
    r = chat(stack, key)
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(r.headers["retry-after"]) <= 20  # one request refills every 20 s
    assert r.headers["x-request-id"]


def test_a_users_limit_is_shared_by_all_of_its_keys(stack: Stack) -> None:
    user_id, key1 = user_and_key(stack, {"rpm": 2})
    key2 = httpx.post(f"{stack.url}/admin/users/{user_id}/keys", json={"name": "2"}, headers=AUTH).json()["key"]
    assert chat(stack, key1).status_code == 200
    assert chat(stack, key2).status_code == 200
    assert chat(stack, key1).status_code == 429
    assert chat(stack, key2).status_code == 429


def test_a_keys_own_limit_is_tighter_than_its_users(stack: Stack) -> None:
    _, key = user_and_key(stack, {"rpm": 100}, {"rpm": 1})
    first = chat(stack, key)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "1"  # the tightest limit is shown
    refused = chat(stack, key)
    assert refused.status_code == 429
    assert "key" in refused.json()["error"]["message"]


def test_concurrent_requests_admit_exactly_the_limit(stack: Stack) -> None:
    _, key = user_and_key(stack, {"rpm": 10})
    with ThreadPoolExecutor(25) as pool:
        codes = list(pool.map(lambda _: chat(stack, key).status_code, range(40)))
    assert codes.count(200) == 10
    assert codes.count(429) == 30


def test_tokens_are_admitted_from_the_estimate_and_corrected_from_usage(stack: Stack) -> None:
    _, key = user_and_key(stack, {"tpm": 1000})
    # The estimate counts max_tokens; the fake upstream uses about a dozen tokens in all.
    r = chat(stack, key, max_tokens=400)
    assert r.status_code == 200
    used = r.json()["usage"]["total_tokens"]
    assert used < 50
    assert int(r.headers["x-ratelimit-remaining-tokens"]) < 600  # the estimate was taken
    r2 = chat(stack, key, max_tokens=1)
    assert r2.status_code == 200
    # The first request's estimate was replaced by its real usage (plus a little refill since).
    remaining = int(r2.headers["x-ratelimit-remaining-tokens"])
    assert 1000 - used - 60 <= remaining <= 1000 - used, (remaining, used)


def test_a_request_over_the_remaining_tokens_is_refused(stack: Stack) -> None:
    _, key = user_and_key(stack, {"tpm": 500})
    assert chat(stack, key, max_tokens=450).status_code == 200
    r = chat(stack, key, max_tokens=450)
    # the first request's real usage was small, so the bucket is mostly back
    assert r.status_code == 200
    assert chat(stack, key, max_tokens=480).status_code == 429


def test_the_openai_sdk_sees_a_rate_limit_error_and_headers(stack: Stack) -> None:
    _, key = user_and_key(stack, {"rpm": 1})
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="compat-test", messages=HI)  # type: ignore[arg-type]
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="compat-test", messages=HI)  # type: ignore[arg-type]
    assert err.value.status_code == 429
    assert int(err.value.response.headers["retry-after"]) >= 1


def test_messages_share_the_limit_and_the_anthropic_sdk_sees_a_rate_limit_error(stack: Stack) -> None:
    _, key = user_and_key(stack, {"rpm": 2})
    assert chat(stack, key).headers["x-ratelimit-remaining-requests"] == "1"
    client = anthropic.Anthropic(base_url=stack.url, api_key=key, max_retries=0)
    raw = client.messages.with_raw_response.create(model="compat-test", max_tokens=20, messages=HI)  # type: ignore[arg-type]
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.create(model="compat-test", max_tokens=20, messages=HI)  # type: ignore[arg-type]
    assert int(err.value.response.headers["retry-after"]) >= 1
    assert err.value.body["error"]["code"] == "rate_limit_exceeded"  # type: ignore[index]


def test_stream_responses_carry_the_headers_too(stack: Stack) -> None:
    _, key = user_and_key(stack, {"rpm": 5})
    with httpx.stream("POST", f"{stack.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": "compat-test", "messages": HI, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["x-ratelimit-remaining-requests"] == "4"
        assert b"[DONE]" in r.read()


def test_errors_before_admission_are_not_counted(stack: Stack) -> None:
    _, key = user_and_key(stack, {"rpm": 1, "allowed_models": ["compat-test"]})
    assert chat(stack, key, model="gpt-test").status_code == 403
    assert chat(stack, key, model="no-such-model").status_code == 404
    assert chat(stack, key).status_code == 200


def test_model_and_global_limits_from_config(tmp_path: Path) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["limits"] = {"default_user": {"rpm": None, "tpm": None}, "global": {"rpm": 6}}
        for model in config["models"]:
            if model["name"] == "compat-test":
                model["rpm"] = 2

    with running_stack(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gw.db", edit=edit) as s:
        _, a = user_and_key(s)
        _, b = user_and_key(s)
        assert chat(s, a).status_code == 200
        assert chat(s, b).status_code == 200
        refused = chat(s, a)  # the model's limit is shared by every caller
        assert refused.status_code == 429 and "model" in refused.json()["error"]["message"]
        # Four of the global six are left; the master key is charged to nobody but still counts.
        codes = [chat(s, MASTER_KEY, model="gpt-test").status_code for _ in range(6)]
        assert codes == [200] * 4 + [429] * 2
        assert "global" in chat(s, b, model="gpt-test").json()["error"]["message"]
