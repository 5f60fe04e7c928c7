"""Hostile input through the HTTP API: one request must never lock anyone
out, every number has a bound, every route has the same body limit before
authentication, and every answer — 404, 405, 500 included — carries
``x-request-id`` and the error shape of its dialect."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.conftest import AUTH, MASTER_KEY, Stack, running_stack

HI = [{"role": "user", "content": "hi"}]
TPM = 20_000


def _limited(config: dict[str, Any]) -> None:
    """Token limits on every scope a hostile request could poison: the user,
    the model and the whole gateway."""
    config["limits"] = {"default_user": {"rpm": None, "tpm": TPM}, "global": {"rpm": None, "tpm": 10 * TPM}}
    for model in config["models"]:
        if model["name"] == "gpt-test":
            model["tpm"] = 5 * TPM


@pytest.fixture(scope="module")
def hostile_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("hostile")
    with running_stack(folder, f"sqlite+aiosqlite:///{folder}/gw.db", edit=_limited) as stack:
        yield stack


def funded_key(stack: Stack) -> tuple[str, str]:
    user = httpx.post(f"{stack.url}/admin/users", json={"email": f"h{time.time_ns()}@example.com"}, headers=AUTH)
    assert user.status_code == 201, user.text
    uid = user.json()["id"]
    credit = httpx.post(f"{stack.url}/admin/users/{uid}/credits", json={"amount_usd": "5"}, headers=AUTH)
    assert credit.status_code == 201, credit.text
    key = httpx.post(f"{stack.url}/admin/users/{uid}/keys", json={"name": "h"}, headers=AUTH)
    assert key.status_code == 201, key.text
    return uid, key.json()["key"]


def post(stack: Stack, path: str, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{stack.url}{path}", json=body, headers={"authorization": f"Bearer {key}"}, timeout=20)


def chat(stack: Stack, key: str, **extra: Any) -> httpx.Response:
    return post(stack, "/v1/chat/completions", key, {"model": "gpt-test", "messages": HI, **extra})


def balance(stack: Stack, uid: str) -> str:
    value: str = httpx.get(f"{stack.url}/admin/users/{uid}", headers=AUTH).json()["balance_usd"]
    return value


HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/chat/completions", {"max_tokens": 4611686018427387904}, "max_tokens"),
    ("/v1/chat/completions", {"max_tokens": 2**40}, "max_tokens"),
    ("/v1/chat/completions", {"max_completion_tokens": 2**62}, "max_completion_tokens"),
    ("/v1/chat/completions", {"max_tokens": 1_000_000}, "max_tokens"),  # bounded, but past the model's 4096
    ("/v1/chat/completions", {"n": 2**40}, "n"),
    ("/v1/chat/completions", {"seed": 2**70}, "seed"),
    ("/v1/chat/completions", {"top_logprobs": 10**9, "logprobs": True}, "top_logprobs"),
    ("/v1/messages", {"max_tokens": 4611686018427387904}, "max_tokens"),
    ("/v1/messages", {"max_tokens": 100, "top_k": 2**63}, "top_k"),
    ("/v1/messages", {"max_tokens": 100, "thinking": {"type": "enabled", "budget_tokens": 2**62}},
     "thinking.budget_tokens"),
]


def test_a_hostile_max_tokens_locks_nobody_out(hostile_stack: Stack) -> None:
    uid, key = funded_key(hostile_stack)
    _, other = funded_key(hostile_stack)
    before = balance(hostile_stack, uid)
    assert len(HOSTILE) == 10
    for path, extra, param in HOSTILE:
        body = {"model": "gpt-test", "messages": HI, **extra}
        if path == "/v1/messages":
            body.setdefault("max_tokens", 100)
        resp = post(hostile_stack, path, key, body)
        assert resp.status_code == 400, (extra, resp.text)
        assert resp.headers["x-request-id"]
        error = resp.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param, (extra, error)
        if path == "/v1/messages":
            assert resp.json()["type"] == "error"
    # The same user, another user and the master key are all served, and none is left in debt.
    for credential in (key, other, MASTER_KEY):
        ok = chat(hostile_stack, credential)
        assert ok.status_code == 200, ok.text
        assert int(ok.headers["x-ratelimit-remaining-tokens"]) > TPM // 2
    assert balance(hostile_stack, uid) < before  # charged for the one real request only, never refused


def test_embedding_dimensions_are_bounded(hostile_stack: Stack) -> None:
    _, key = funded_key(hostile_stack)
    for dims in (10**12, 10**7, 8193):
        resp = post(hostile_stack, "/v1/embeddings", key, {"model": "mock", "input": "x", "dimensions": dims})
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == "dimensions"
    ok = post(hostile_stack, "/v1/embeddings", key, {"model": "mock", "input": "x", "dimensions": 8192})
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["data"][0]["embedding"]) == 8192


def test_an_unexpected_error_settles_limits_and_money(hostile_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the middle of a request is a 500 in the dialect's shape with
    x-request-id; what the request took from the limits and the balance is
    given back as on any other error."""
    pipeline = hostile_stack.app.state.gateway.pipeline

    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise OverflowError("a bug")

    uid, key = funded_key(hostile_stack)
    before = balance(hostile_stack, uid)
    big = TPM * 3 // 4  # two such requests fit the user's tpm only if the first gave its tokens back
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "_call_chat", boom)
        patch.setattr(pipeline, "_open_stream", boom)
        for stream in (False, True):
            failed = chat(hostile_stack, key, max_tokens=4000, stream=stream, n=big // 4000)
            assert failed.status_code == 500, failed.text
            assert failed.json()["error"]["code"] == "internal_error"
            assert failed.headers["x-request-id"]
        message = post(hostile_stack, "/v1/messages", key, {"model": "gpt-test", "messages": HI, "max_tokens": 100})
        assert message.status_code == 500
        assert message.json()["type"] == "error" and message.json()["error"]["type"] == "api_error"
        assert message.headers["x-request-id"]
    assert balance(hostile_stack, uid) == before
    again = chat(hostile_stack, key, max_tokens=4000, n=big // 4000)
    assert again.status_code == 200, again.text


@pytest.mark.parametrize(("method", "path", "anthropic"), [
    ("GET", "/v1/chat/completions", False),
    ("DELETE", "/admin/users", False),
    ("GET", "/v1/messages", True),
    ("GET", "/v1/nothing-here", False),
    ("POST", "/nothing/here", False),
    ("GET", "/v1/messages/nothing", True),
])
def test_every_answer_has_a_request_id_and_the_dialects_shape(hostile_stack: Stack, method: str, path: str,
                                                            anthropic: bool) -> None:
    resp = httpx.request(method, f"{hostile_stack.url}{path}", headers=AUTH)
    assert resp.status_code in (404, 405)
    assert resp.headers["x-request-id"].startswith("req_")
    body = resp.json()
    assert body["error"]["message"]
    assert (body.get("type") == "error") is anthropic
    if anthropic:
        assert body["error"]["type"] in ("not_found_error", "invalid_request_error")
    echoed = httpx.request(method, f"{hostile_stack.url}{path}", headers={**AUTH, "x-request-id": "mine-1"})
    assert echoed.headers["x-request-id"] == "mine-1"


def _raw(url: str, head: bytes, body: bytes = b"") -> bytes:
    """Send ``head`` (and ``body``) on a raw connection; what comes back until the server closes it."""
    parsed = urlparse(url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as conn:
        conn.sendall(head + body)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize("path", ["/auth/login", "/admin/users", "/me/keys", "/v1/chat/completions",
                                  "/v1/messages"])
def test_a_declared_length_over_the_limit_is_refused_unread(hostile_stack: Stack, path: str) -> None:
    """Content-Length is honoured up front, before authentication: the
    body is never sent, and the 413 comes back at once."""
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: 300000000\r\n\r\n").encode()
    answer = _raw(hostile_stack.url, head)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", answer[:300]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"x-request-id: " in headers.lower()
    assert b'"request_too_large"' in body


@pytest.mark.parametrize("path", ["/auth/login", "/admin/users", "/me/keys", "/v1/chat/completions"])
def test_a_chunked_body_over_the_limit_is_refused_before_authentication(hostile_stack: Stack, path: str) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"email": "'
        for _ in range(64):
            yield b"x" * 16384  # 1 MiB in all, past the 64 KiB limit
        yield b'"}'

    # (/v1 routes check the credential first, reading nothing: without one they answer 401 unread.)
    auth = AUTH if path.startswith("/v1/") else {}
    resp = httpx.post(f"{hostile_stack.url}{path}", content=pieces(),
                      headers={"content-type": "application/json", **auth}, timeout=20)
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "request_too_large"
    assert resp.headers["x-request-id"]


def test_a_body_under_the_limit_reaches_its_route(hostile_stack: Stack) -> None:
    near = {"email": "a@example.com", "password": "p" * 60_000}
    resp = httpx.post(f"{hostile_stack.url}/auth/login", json=near, timeout=20)
    assert resp.status_code in (400, 401), resp.text  # the route's own answer, not 413
