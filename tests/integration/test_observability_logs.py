"""Logs of a real ``llm-gateway serve``: one JSON line per request with the
SPEC §7 fields, start-up and shutdown logged, the request id the same in
the log, the response and the provider call, and never a credential or a
message's contents."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import AUTH, gateway_config
from tests.fakes import openai_server
from tests.fakes.server import serve_in_thread
from tests.integration.processes import gateway_process

SECRET_PROMPT = "the launch code is 7-alpha-9"


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every line the gateway itself wrote (gunicorn's and uvicorn's own
    start-up lines are plain text on standard error)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_one_json_line_per_request(tmp_path: Path) -> None:
    upstream = openai_server.create_app()
    server = serve_in_thread(upstream)
    try:
        config = gateway_config({"openai": server.url}, f"sqlite+aiosqlite:///{tmp_path}/logs.db")
        with gateway_process(config, tmp_path, "gw", log_level="info") as base, \
                httpx.Client(base_url=base, headers=AUTH, timeout=10) as http:
            user = http.post("/admin/users", json={"email": f"log-{secrets.token_hex(4)}@example.com"}).json()
            http.post(f"/admin/users/{user['id']}/credits", json={"amount_usd": "1.00"})
            key = http.post(f"/admin/users/{user['id']}/keys", json={"name": "k"}).json()
            client = openai.OpenAI(base_url=f"{base}/v1", api_key=key["key"], max_retries=0)
            chat = client.chat.completions.with_raw_response.create(
                model="gpt-test", messages=[{"role": "user", "content": SECRET_PROMPT}],
                extra_headers={"x-request-id": "client-chosen-id-1"})
            stream = client.chat.completions.with_raw_response.create(
                model="gpt-test", messages=[{"role": "user", "content": SECRET_PROMPT + " (streamed)"}], stream=True)
            chunks = list(stream.parse())
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
            refused = httpx.post(f"{base}/v1/chat/completions", headers={"authorization": "Bearer gw-" + "w" * 43},
                                 json={"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]})
            assert refused.status_code == 401
        log = (tmp_path / "gw.log").read_text()
    finally:
        server.stop()

    lines = _json_lines(log)
    requests = [line for line in lines if line["logger"] == "llm_gateway.request"]
    assert [r["status"] for r in requests] == [200, 200, 404, 401]
    first, streamed, missing, unknown = requests
    assert first["request_id"] == "client-chosen-id-1" == chat.headers["x-request-id"]
    assert streamed["request_id"] == stream.headers["x-request-id"]
    usage = chat.parse().usage
    assert usage is not None
    assert first | {"ts": None, "latency_ms": None} == {
        "ts": None, "level": "info", "logger": "llm_gateway.request", "msg": "request",
        "request_id": "client-chosen-id-1", "endpoint": "chat", "model": "gpt-test",
        "deployment": "oai/gpt-4o-mini", "status": 200, "user_id": user["id"], "key_id": key["id"],
        "stream": False, "cache": chat.headers["x-gateway-cache"], "input_tokens": usage.prompt_tokens,
        "cached_input_tokens": 0,
        "output_tokens": usage.completion_tokens, "cost_usd": chat.headers["x-gateway-cost-usd"],
        "latency_ms": None, "ttft_ms": None, "rate_limited": None,
    }
    assert first["latency_ms"] > 0 and first["ts"].endswith("Z")
    assert streamed["stream"] is True and streamed["ttft_ms"] is not None
    assert 0 < streamed["ttft_ms"] <= streamed["latency_ms"]
    assert streamed["output_tokens"] > 0 and any(c.choices for c in chunks)
    assert missing["model"] == "missing" and missing["deployment"] is None
    # Refused before a caller or a model was known: still one line, with its request id.
    assert unknown["request_id"] == refused.headers["x-request-id"] and unknown["model"] == "unknown"
    assert unknown["user_id"] is None and unknown["endpoint"] == "chat"

    # The request id reached the provider with the call.
    sent = {r["headers"].get("x-request-id") for r in upstream.state.requests}
    assert {"client-chosen-id-1", streamed["request_id"]} <= sent

    messages = [line["msg"] for line in lines]
    assert any(m.startswith("gateway started") for m in messages)
    assert any(m == "gateway stopped" for m in messages)
    for secret in (key["key"], AUTH["authorization"].split()[1], openai_server.API_KEY, SECRET_PROMPT):
        assert secret not in log
