"""``/v1/messages`` errors in Anthropic's shape and with Anthropic's types
(SPEC §4), so that the official SDK raises the exception class a client
catches: ``NotFoundError`` for an unknown model, ``RateLimitError`` for a
limit, ``ServiceUnavailableError`` when every circuit is open, and so on."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import AUTH, MASTER_KEY, Stack, running_stack

USER: Any = [{"role": "user", "content": "hi"}]


def _client(stack: Stack, key: str = MASTER_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key=key, max_retries=0, timeout=20)


def _key(stack: Stack, user: dict[str, Any] | None = None, credit: str | None = "1.00",
         key: dict[str, Any] | None = None) -> str:
    """A new user (``credit`` USD, none when ``None``) and an API key of theirs."""
    made = httpx.post(f"{stack.url}/admin/users", json={"email": f"ae{time.time_ns()}@example.com", **(user or {})},
                      headers=AUTH)
    assert made.status_code == 201, made.text
    uid = made.json()["id"]
    if credit is not None:
        assert httpx.post(f"{stack.url}/admin/users/{uid}/credits", json={"amount_usd": credit},
                          headers=AUTH).status_code == 201
    got = httpx.post(f"{stack.url}/admin/users/{uid}/keys", json={"name": "k", **(key or {})}, headers=AUTH)
    assert got.status_code == 201, got.text
    return str(got.json()["key"])


def _bad_body(stack: Stack) -> None:
    _client(stack).messages.create(model="gpt-test", max_tokens=5,
                                   messages=[{"role": "system", "content": "x"}])  # type: ignore[misc, list-item]


def _bad_key(stack: Stack) -> None:
    _client(stack, "gw-" + "z" * 40).messages.create(model="gpt-test", max_tokens=5, messages=USER)


def _no_balance(stack: Stack) -> None:
    _client(stack, _key(stack, credit=None)).messages.create(model="pricey", max_tokens=50, messages=USER)


def _model_not_allowed(stack: Stack) -> None:
    key = _key(stack, {"allowed_models": ["gpt-test"]})
    _client(stack, key).messages.create(model="compat-test", max_tokens=5, messages=USER)


def _unknown_model(stack: Stack) -> None:
    _client(stack).messages.create(model="no-such-model", max_tokens=5, messages=USER)


def _too_large(stack: Stack) -> None:
    _client(stack).messages.create(model="gpt-test", max_tokens=5,
                                   messages=[{"role": "user", "content": "x" * 70_000}])  # max_request_bytes 65536


def _rate_limited(stack: Stack) -> None:
    client = _client(stack, _key(stack, key={"rpm": 1}))
    client.messages.create(model="gpt-test", max_tokens=5, messages=USER)
    client.messages.create(model="gpt-test", max_tokens=5, messages=USER)


def _upstream_down(stack: Stack) -> None:
    _client(stack).messages.create(model="down-test", max_tokens=5, messages=USER)  # 127.0.0.1:9 refuses


def _upstream_timeout(stack: Stack) -> None:
    # The "oai-slow" provider allows 0.5 s; the fake answers this after 30 s.
    _client(stack).messages.create(model="slow-test", max_tokens=5,
                                   messages=[{"role": "user", "content": "fake-error:hang"}])


CASES: list[tuple[Callable[[Stack], None], int, str, type[anthropic.APIStatusError]]] = [
    (_bad_body, 400, "invalid_request_error", anthropic.BadRequestError),
    (_bad_key, 401, "authentication_error", anthropic.AuthenticationError),
    (_no_balance, 402, "billing_error", anthropic.PaymentRequiredError),
    (_model_not_allowed, 403, "permission_error", anthropic.PermissionDeniedError),
    (_unknown_model, 404, "not_found_error", anthropic.NotFoundError),
    (_too_large, 413, "request_too_large", anthropic.ContentTooLargeError),
    (_rate_limited, 429, "rate_limit_error", anthropic.RateLimitError),
    (_upstream_down, 502, "api_error", anthropic.InternalServerError),
    (_upstream_timeout, 504, "timeout_error", anthropic.GatewayTimeoutError),
]


@pytest.mark.parametrize(("provoke", "status", "type_", "raised"), CASES, ids=[c[0].__name__[1:] for c in CASES])
def test_each_status_has_anthropics_type_and_sdk_exception(
    stack: Stack, provoke: Callable[[Stack], None], status: int, type_: str,
    raised: type[anthropic.APIStatusError],
) -> None:
    with pytest.raises(anthropic.APIStatusError) as caught:
        provoke(stack)
    error = caught.value
    assert type(error) is raised, (type(error), error.body)
    assert error.status_code == status
    body = error.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == type_
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in error.response.text
    if status == 429:
        assert int(error.response.headers["retry-after"]) >= 1


def test_the_gateways_param_and_code_stay_beside_anthropics_fields(stack: Stack) -> None:
    resp = httpx.post(f"{stack.url}/v1/messages", headers={"x-api-key": MASTER_KEY},
                      json={"model": "no-such-model", "max_tokens": 5, "messages": USER})
    assert resp.status_code == 404
    assert resp.json() == {"type": "error", "error": {
        "type": "not_found_error", "message": resp.json()["error"]["message"], "param": "model",
        "code": "model_not_found"}}


def test_the_openai_dialect_keeps_its_own_types(stack: Stack) -> None:
    resp = httpx.post(f"{stack.url}/v1/chat/completions", headers=AUTH,
                      json={"model": "no-such-model", "messages": USER})
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "invalid_request_error" and "type" not in resp.json()


@pytest.fixture(scope="module")
def tripping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway whose circuits open at the first failure, for a minute."""
    folder = tmp_path_factory.mktemp("anthropic-errors")
    routing = {"retries": 0, "circuit_breaker": {"failure_threshold": 1, "cooldown_s": 60}}
    with running_stack(folder, f"sqlite+aiosqlite:///{folder}/gw.db", {"routing": routing}) as running:
        yield running


def test_an_open_circuit_is_overloaded_with_retry_after(tripping: Stack) -> None:
    client = _client(tripping)
    with pytest.raises(anthropic.InternalServerError) as down:
        client.messages.create(model="down-test", max_tokens=5, messages=USER)
    assert down.value.status_code == 502  # this failure opens the circuit
    with pytest.raises(anthropic.ServiceUnavailableError) as refused:
        client.messages.create(model="down-test", max_tokens=5, messages=USER)
    body = refused.value.response.json()
    assert refused.value.status_code == 503
    assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    assert body["error"]["code"] == "no_healthy_deployment"
    found = re.search(r"the next trial is in (\d+) s\.", body["error"]["message"])
    assert found, body
    assert 1 <= int(found.group(1)) <= 60
    assert refused.value.response.headers["retry-after"] == found.group(1)
