"""Sentry, pointed at a fake collector: one event per upstream failure and per
unhandled error, tagged with the request id, model and user id; nothing
for requests that went well; never a credential or a message's contents."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import AUTH, MASTER_KEY, Stack, running_stack
from tests.fakes import openai_server, sentry_server
from tests.fakes.prometheus import scrape
from tests.fakes.server import serve_in_thread

SECRET_PROMPT = "my diary says the vault code is 4711"


@pytest.fixture
def sentry(tmp_path: Path) -> Iterator[tuple[Stack, sentry_server.SentryState]]:
    collector = sentry_server.create_app()
    server = serve_in_thread(collector)
    try:
        extra = {"observability": {"sentry_dsn": sentry_server.dsn(server.url)}}
        with running_stack(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/sentry.db", extra) as stack:
            yield stack, collector.state.sentry
    finally:
        server.stop()


def _events(state: sentry_server.SentryState, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while len(state.events) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return list(state.events)


def test_upstream_failures_and_unhandled_errors(sentry: tuple[Stack, sentry_server.SentryState]) -> None:
    stack, state = sentry
    with httpx.Client(base_url=stack.url, headers=AUTH, timeout=10) as http:
        user = http.post("/admin/users", json={"email": f"s-{secrets.token_hex(4)}@example.com"}).json()
        key = http.post(f"/admin/users/{user['id']}/keys", json={"name": "k"}).json()["key"]
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0)
    for i in range(3):  # going well: no event
        client.chat.completions.create(model="mock", messages=[{"role": "user", "content": f"{SECRET_PROMPT} {i}"}])
    failed = []
    for model in ("badkey-test", "down-test"):
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": SECRET_PROMPT}])
        failed.append((model, err.value.status_code, err.value.response.headers["x-request-id"]))

    # A bug deep in the pipeline: the client gets a 500 in the error shape, Sentry the exception.
    gw = stack.app.state.gateway

    def explode(name: str) -> Any:
        raise RuntimeError(f"exploded while routing {SECRET_PROMPT} with {key}")

    gw.router.resolve = explode
    try:
        resp = httpx.post(f"{stack.url}/v1/chat/completions", timeout=10,
                          headers={"authorization": f"Bearer {key}", "x-request-id": "bug-report-1"},
                          json={"model": "mock", "messages": [{"role": "user", "content": SECRET_PROMPT}]})
    finally:
        del gw.router.resolve
    assert resp.status_code == 500
    assert resp.json()["error"]["code"] == "internal_error"
    assert scrape(stack.url).value("gateway_requests_total", status="500") == 1

    events = _events(state, 3)
    time.sleep(0.3)  # anything extra would have arrived by now
    assert len(state.events) == 3
    upstream = [e for e in events if e.get("logger") == "llm_gateway.upstream"]
    assert len(upstream) == 2
    for (model, status, request_id), event in zip(failed, upstream, strict=True):
        assert event["tags"]["request_id"] == request_id
        assert event["tags"]["model"] == model and event["tags"]["status"] == str(status)
        assert event["user"] == {"id": user["id"]}
        assert event["level"] == "error"
    (crash,) = [e for e in events if "exception" in e]
    assert crash["tags"]["request_id"] == "bug-report-1"
    assert crash["tags"]["path"] == "/v1/chat/completions"
    (exc,) = crash["exception"]["values"]
    assert exc["type"] == "RuntimeError" and exc["stacktrace"]["frames"]
    assert not any("vars" in frame for frame in exc["stacktrace"]["frames"])

    raw = b"".join(state.raw).decode()
    for secret in (SECRET_PROMPT, key, MASTER_KEY, openai_server.API_KEY, "sk-wrong-key-1234"):
        assert secret not in raw
