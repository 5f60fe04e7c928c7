"""Failures explain themselves in the log (issue 13): each failed attempt is
one warning naming the client's model, the deployment, the provider's kind
and address, the attempt's number and the cause in words; a circuit opening
(warning), going half-open and closing (info) is logged with the deployment
and why; a 503 ``no_healthy_deployment`` says when the next trial is and
sets ``Retry-After``. Through a live gateway in front of the fault-injecting
fake and a closed port."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llm_gateway.observability.logs import JsonFormatter
from tests.conftest import AUTH
from tests.fakes import faulty_server
from tests.integration.faults import FaultyStack, faulty_gateway, model

USER = [{"role": "user", "content": "hello"}]
COOLDOWN = 2.0
ROUTING = {"retries": 0, "circuit_breaker": {"failure_threshold": 2, "cooldown_s": COOLDOWN}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultyStack]:
    models = [
        model("down-x", "down:gpt-x"), model("busy", "busy"), model("junk", "junk"), model("dropped", "dropped"),
        model("sleepy", "sleepy", provider="up-quick"), model("sleepy-stream", "sleepy-stream", provider="up-quick"),
        model("no-handshake", "silent:gpt-x"),
        model("flaky", "flaky"), model("picky", "picky"),
    ]
    with faulty_gateway(tmp_path_factory.mktemp("failure-logs"), models, ROUTING) as running:
        yield running


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="llm_gateway.routing"):
        yield caplog


def _chat(stack: FaultyStack, name: str, **extra: Any) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/chat/completions", json={"model": name, "messages": USER, **extra},
                      headers=AUTH, timeout=20)


def _events(caplog: pytest.LogCaptureFixture, event: str, **match: Any) -> list[logging.LogRecord]:
    found = []
    for record in caplog.records:
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields.get("event") == event and all(
                fields.get(k) == v for k, v in match.items()):
            found.append(record)
    return found


def test_a_refused_connection_names_model_deployment_address_attempt_and_cause(
    stack: FaultyStack, logs: pytest.LogCaptureFixture
) -> None:
    resp = _chat(stack, "down-x")
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "upstream_error"
    assert "127.0.0.1" not in resp.text, "the client never learns an internal address"
    [record] = _events(logs, "upstream_attempt_failed", model="down-x")
    assert record.levelno == logging.WARNING and record.name.startswith("llm_gateway.")
    text = record.getMessage()
    for part in ("'down-x'", "down/gpt-x", "openai", "http://127.0.0.1:9", "attempt 1", "connection refused"):
        assert part in text, (part, text)
    line = json.loads(JsonFormatter().format(record))  # the JSON line on standard output
    assert {k: line[k] for k in ("level", "model", "deployment", "provider_kind", "address", "attempt", "cause")} == {
        "level": "warning", "model": "down-x", "deployment": "down/gpt-x", "provider_kind": "openai",
        "address": "http://127.0.0.1:9", "attempt": 1, "cause": "connection refused"}
    assert line["msg"] == text
    assert line["request_id"] == resp.headers["x-request-id"]  # the attempt's line ties to the request's


def test_a_provider_answering_503_is_logged_with_status_and_message(
    stack: FaultyStack, logs: pytest.LogCaptureFixture
) -> None:
    stack.plan("busy", fail_first=1, failure="503")
    assert _chat(stack, "busy").status_code == 502
    [record] = _events(logs, "upstream_attempt_failed", model="busy")
    assert record.levelno == logging.WARNING
    assert record.fields["cause"] == "HTTP 503: Injected failure 503"  # type: ignore[attr-defined]
    assert "up/busy" in record.getMessage() and "HTTP 503: Injected failure 503" in record.getMessage()
    assert f"http://127.0.0.1:{httpx.URL(stack.upstream).port}" in record.getMessage()
    assert faulty_server.API_KEY not in logs.text


@pytest.mark.parametrize(("name", "plan", "cause"), [
    ("junk", {"failure": "garbage"}, "invalid response"),
    ("dropped", {"failure": "disconnect"}, "connection closed mid-answer"),
    ("sleepy", {"failure": "hang", "hang_s": 5}, "timed out (first byte)"),  # up-quick waits 0.3 s
    ("no-handshake", None, "timed out (connect)"),  # a port that never completes a handshake
])
def test_each_cause_in_words(
    stack: FaultyStack, logs: pytest.LogCaptureFixture, name: str, plan: dict[str, Any] | None, cause: str
) -> None:
    if plan is not None:
        stack.plan(name, fail_first=1, **plan)
    assert _chat(stack, name).status_code in (502, 504)
    [record] = _events(logs, "upstream_attempt_failed", model=name)
    assert record.fields["cause"] == cause, record.getMessage()  # type: ignore[attr-defined]
    assert record.getMessage().endswith(f"failed: {cause}")


def test_a_streamed_attempt_that_times_out_names_the_phase(stack: FaultyStack, logs: pytest.LogCaptureFixture) -> None:
    stack.plan("sleepy-stream", fail_first=1, failure="hang", hang_s=5)
    resp = _chat(stack, "sleepy-stream", stream=True)
    assert resp.status_code == 504
    [record] = _events(logs, "upstream_attempt_failed", model="sleepy-stream")
    assert record.fields["cause"] == "timed out (first byte)"  # type: ignore[attr-defined]


def test_the_providers_refusal_of_the_request_is_info_not_warning(
    stack: FaultyStack, logs: pytest.LogCaptureFixture
) -> None:
    stack.plan("picky", fail_first=1, failure="400")
    assert _chat(stack, "picky").status_code == 400
    [record] = _events(logs, "upstream_attempt_failed", model="picky")
    assert record.levelno == logging.INFO and "HTTP 400: Injected failure 400" in record.getMessage()


def test_the_breaker_logs_opening_half_open_and_closing_and_the_503_says_when(
    stack: FaultyStack, logs: pytest.LogCaptureFixture
) -> None:
    stack.plan("flaky", fail_first=2, failure="503")
    assert [_chat(stack, "flaky").status_code for _ in range(2)] == [502, 502]
    opened_at = time.monotonic()
    [opened] = _events(logs, "circuit_open", deployment="up/flaky")
    assert opened.levelno == logging.WARNING
    assert opened.getMessage() == ("circuit of up/flaky opened: 2 consecutive failures "
                                   "(last: HTTP 503: Injected failure 503); next trial in 2 s")

    refused = _chat(stack, "flaky")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_healthy_deployment"
    message = refused.json()["error"]["message"]
    found = re.fullmatch(r"All deployments of 'flaky' are unavailable \(circuit open\); "
                         r"the next trial is in (\d+) s\.", message)
    assert found, message
    assert 1 <= int(found.group(1)) <= COOLDOWN
    assert refused.headers["retry-after"] == found.group(1)
    assert not _events(logs, "circuit_half_open", deployment="up/flaky")

    time.sleep(max(0.0, opened_at + COOLDOWN + 0.1 - time.monotonic()))
    assert _chat(stack, "flaky").status_code == 200  # the trial; the planned failures are spent
    [trial] = _events(logs, "circuit_half_open", deployment="up/flaky")
    [closed] = _events(logs, "circuit_closed", deployment="up/flaky")
    assert trial.levelno == closed.levelno == logging.INFO
    assert "half-open" in trial.getMessage() and "up/flaky" in trial.getMessage()
    assert closed.getMessage() == "circuit of up/flaky closed: its trial request succeeded"
