"""One deadline per request (issue 17, SPEC §2 ``routing.request_timeout_s``,
§4 504 ``upstream_timeout``, §8 "Retries"): through a live gateway in front of
a fake upstream that hangs, the client gets its 504 when the request's
deadline passes — not after every attempt has used its own time limit — and a
client may ask for less with ``x-gateway-timeout``.

Here the deadline is 3 s (streamed or not), an attempt may take 2 s, and 5
retries are allowed: without the deadline a hung upstream would hold the
client 6 × 2 s plus the backoff."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llm_gateway.providers.http import STREAM_FIRST_BYTE_S, limits
from llm_gateway.settings import ProviderSettings
from tests.integration.faults import FaultyStack, faulty_gateway, funded_key, model

DEADLINE = 3.0
ATTEMPT = 2.0  # the models' timeout_s
ROUTING = {"retries": 5, "backoff_base_s": 0.25, "max_retry_wait_s": 10,
           "request_timeout_s": DEADLINE, "stream_request_timeout_s": DEADLINE,
           # The breaker has tests of its own; here it stays closed.
           "circuit_breaker": {"failure_threshold": 1_000_000, "cooldown_s": 30}}
SLACK = 0.5  # the gateway's own work and the test's, on a busy machine
HANG_S = 8.0  # longer than any deadline here
USER = [{"role": "user", "content": "hello"}]
NAMES = ["hang", "hang-stream", "asked", "capped", "ok", "slow-ok", "model-deadline", "retry-after", "flowing"]
MODELS = [
    *(model(n, n, timeout_s=ATTEMPT) for n in NAMES if n != "model-deadline"),
    model("model-deadline", "model-deadline", timeout_s=ATTEMPT, request_timeout_s=1),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultyStack]:
    with faulty_gateway(tmp_path_factory.mktemp("deadline"), MODELS, ROUTING) as running:
        yield running


@pytest.fixture(scope="module")
def key(stack: FaultyStack) -> str:
    return funded_key(stack.url, stack.database_url)[1]


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def _post(http: httpx.Client, stack: FaultyStack, key: str, body: dict[str, Any], timeout: str | None = None,
          path: str = "/v1/chat/completions") -> tuple[httpx.Response, float]:
    headers = {"authorization": f"Bearer {key}"}
    if timeout is not None:
        headers["x-gateway-timeout"] = timeout
    started = time.monotonic()
    resp = http.post(f"{stack.url}{path}", json=body, headers=headers)
    return resp, time.monotonic() - started


def _assert_deadline_504(resp: httpx.Response) -> None:
    assert resp.status_code == 504, resp.text
    assert resp.json()["error"]["type"] == "timeout_error"
    assert resp.json()["error"]["code"] == "upstream_timeout"


def test_a_hung_upstream_gets_the_client_a_504_at_the_deadline(
    stack: FaultyStack, http: httpx.Client, key: str
) -> None:
    stack.plan("hang", fail_first=100, failure="hang", hang_s=HANG_S)
    resp, took = _post(http, stack, key, {"model": "hang", "messages": USER})
    _assert_deadline_504(resp)
    # The first attempt ends at its own 2 s, the retry at the request's 3 s.
    assert DEADLINE - 0.1 <= took < DEADLINE + SLACK, took
    assert stack.calls("hang") == 2


def test_a_stream_to_a_hung_upstream_gets_a_504_at_the_deadline(
    stack: FaultyStack, http: httpx.Client, key: str
) -> None:
    stack.plan("hang-stream", fail_first=100, failure="hang", hang_s=HANG_S)
    resp, took = _post(http, stack, key, {"model": "hang-stream", "stream": True, "messages": USER})
    _assert_deadline_504(resp)  # before any byte of the stream: a plain HTTP error
    assert DEADLINE - 0.1 <= took < DEADLINE + SLACK, took
    assert stack.calls("hang-stream") == 2


def test_a_client_may_ask_for_less(stack: FaultyStack, http: httpx.Client, key: str) -> None:
    stack.plan("asked", fail_first=100, failure="hang", hang_s=HANG_S)
    for stream in (False, True):
        resp, took = _post(http, stack, key, {"model": "asked", "stream": stream, "messages": USER}, timeout="1")
        _assert_deadline_504(resp)
        assert 0.9 <= took < 1 + SLACK, (stream, took)
    assert stack.calls("asked") == 2  # one attempt each: nothing left for a retry


def test_a_client_may_not_ask_for_more_than_the_configured_deadline(
    stack: FaultyStack, http: httpx.Client, key: str
) -> None:
    stack.plan("capped", fail_first=100, failure="hang", hang_s=HANG_S)
    resp, took = _post(http, stack, key, {"model": "capped", "messages": USER}, timeout="100")
    _assert_deadline_504(resp)
    assert DEADLINE - 0.1 <= took < DEADLINE + SLACK, took


def test_a_model_sets_its_own_deadline(stack: FaultyStack, http: httpx.Client, key: str) -> None:
    stack.plan("model-deadline", fail_first=100, failure="hang", hang_s=HANG_S)
    resp, took = _post(http, stack, key, {"model": "model-deadline", "messages": USER})
    _assert_deadline_504(resp)
    assert 0.9 <= took < 1 + SLACK, took


def test_no_retry_waits_past_the_deadline(stack: FaultyStack, http: httpx.Client, key: str) -> None:
    # A 503 asking for 2.8 s: waiting would leave too little of the 3 s for another attempt,
    # so the client gets the failure (a provider's 503 is a 502) at once instead of a 504 later.
    stack.plan("retry-after", fail_first=100, failure="503", retry_after=2.8)
    resp, took = _post(http, stack, key, {"model": "retry-after", "messages": USER})
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "upstream_error", resp.text
    assert took < 1, took
    assert stack.calls("retry-after") == 1


def test_a_flowing_stream_ends_at_the_deadline(stack: FaultyStack, http: httpx.Client, key: str) -> None:
    # Chunks every 0.4 s (never silent for long), but the whole stream outlasts the 1 s asked for.
    stack.plan("flowing", chunk_gap_s=0.4)
    resp, took = _post(http, stack, key, {"model": "flowing", "stream": True, "messages": USER}, timeout="1")
    frames = [f for f in resp.content.split(b"\n\n") if f]
    assert resp.status_code == 200
    assert len(frames) >= 2  # some chunks reached the client first
    assert json.loads(frames[-1][6:])["error"]["code"] == "upstream_timeout"
    assert 0.9 <= took < 1 + SLACK, took


def test_a_request_within_its_deadline_is_answered(stack: FaultyStack, http: httpx.Client, key: str) -> None:
    stack.plan("slow-ok", latency_s=0.5)
    for model_name, timeout in (("ok", "5"), ("ok", "0.75"), ("slow-ok", "2.5"), ("ok", None)):
        for stream in (False, True):
            resp, _ = _post(http, stack, key, {"model": model_name, "stream": stream, "messages": USER},
                            timeout=timeout)
            assert resp.status_code == 200, (model_name, timeout, stream, resp.text)
            if stream:
                assert resp.text.rstrip().endswith("data: [DONE]"), resp.text
            else:
                assert resp.json()["choices"][0]["message"]["content"].startswith("served by")
    resp, _ = _post(http, stack, key, {"model": "ok", "input": "hi"}, timeout="5", path="/v1/embeddings")
    assert resp.status_code == 200, resp.text


BAD = ["abc", "0", "-1", "nan", "inf", "", "1s"]


def test_a_malformed_timeout_is_refused_naming_the_header(
    stack: FaultyStack, http: httpx.Client, key: str
) -> None:
    cases = 0
    for value in BAD:
        resp, _ = _post(http, stack, key, {"model": "ok", "messages": USER}, timeout=value)
        assert resp.status_code == 400, (value, resp.text)
        error = resp.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "x-gateway-timeout", error
        resp, _ = _post(http, stack, key, {"model": "ok", "input": "hi"}, timeout=value, path="/v1/embeddings")
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "x-gateway-timeout", (value, resp.text)
        # Anthropic's dialect answers in Anthropic's shape.
        resp, _ = _post(http, stack, key, {"model": "ok", "max_tokens": 5, "messages": USER}, timeout=value,
                        path="/v1/messages")
        assert resp.status_code == 400, (value, resp.text)
        body = resp.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
        assert "x-gateway-timeout" in body["error"]["message"], body
        cases += 1
    assert cases == len(BAD)


def test_a_streams_first_byte_has_a_default_limit() -> None:
    lim = limits(ProviderSettings(name="p", kind="openai"))
    assert lim.first_byte == STREAM_FIRST_BYTE_S == 120
    assert lim.call.sock_read is None  # a plain answer's first byte is all of it: the deadline bounds it
    lim = limits(ProviderSettings(name="p", kind="openai", first_byte_timeout_s=7))
    assert lim.first_byte == 7 and lim.call.sock_read == 7
