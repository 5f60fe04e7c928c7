"""The response cache on Redis, shared by two gateway processes; a Redis
that goes away turns the cache off, never the gateway."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import httpx

from tests.conftest import AUTH, gateway_config
from tests.databases import redis_url
from tests.fakes import openai_server
from tests.fakes.server import serve_in_thread
from tests.integration.processes import gateway_process, gateway_processes
from tests.integration.redis_server import own_redis  # noqa: F401  (fixture)


def ask(base: str, key: str, text: str, stream: bool = False) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=20,
                      json={"model": "compat-test", "messages": [{"role": "user", "content": text}],
                            "stream": stream})


def key_for(base: str) -> str:
    uid = httpx.post(f"{base}/admin/users", json={"email": f"cr{time.time_ns()}@example.com"},
                     headers=AUTH).json()["id"]
    return str(httpx.post(f"{base}/admin/users/{uid}/keys", json={"name": "k"}, headers=AUTH).json()["key"])


def test_entries_are_shared_across_processes(tmp_path: Path) -> None:
    fake = openai_server.create_app()
    upstream = serve_in_thread(fake)
    try:
        cfg = gateway_config({"openai": upstream.url}, f"sqlite+aiosqlite:///{tmp_path}/gw.db") | {
            "redis_url": redis_url(), "cache": {"enabled": True}}
        with gateway_processes(cfg, tmp_path, 2) as (a, b):
            key = key_for(a)
            q = f"shared {uuid.uuid4().hex}"
            first = ask(a, key, q)
            assert first.headers["x-gateway-cache"] == "MISS"
            hit = ask(b, key, q)
            assert hit.headers["x-gateway-cache"] == "HIT" and hit.content == first.content
            streamed = ask(b, key, q, stream=True)
            assert streamed.headers["x-gateway-cache"] == "HIT"
            assert streamed.text.endswith("data: [DONE]\n\n")
            assert first.json()["choices"][0]["message"]["content"] in streamed.text
        assert sum(1 for r in fake.state.requests if r["body"]["messages"][0]["content"] == q) == 1
    finally:
        upstream.stop()


def test_a_dead_redis_turns_the_cache_off_not_the_gateway(
    tmp_path: Path, own_redis: tuple[str, subprocess.Popen[bytes]]  # noqa: F811
) -> None:
    url, proc = own_redis
    upstream = serve_in_thread(openai_server.create_app())
    try:
        cfg = gateway_config({"openai": upstream.url}, f"sqlite+aiosqlite:///{tmp_path}/gw.db") | {
            "redis_url": url, "cache": {"enabled": True}}
        with gateway_process(cfg, tmp_path, "gw") as base:
            key = key_for(base)
            q = f"dead {uuid.uuid4().hex}"
            assert ask(base, key, q).headers["x-gateway-cache"] == "MISS"
            assert ask(base, key, q).headers["x-gateway-cache"] == "HIT"
            proc.kill()
            proc.wait()
            began = time.monotonic()
            answers = [ask(base, key, q) for _ in range(3)]
            assert time.monotonic() - began < 10
            assert [r.status_code for r in answers] == [200, 200, 200]
            assert {r.headers["x-gateway-cache"] for r in answers} == {"MISS"}
    finally:
        upstream.stop()
