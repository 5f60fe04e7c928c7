"""A live gateway in front of the fault-injecting fake upstream
(``tests/fakes/faulty_server.py``), for the routing tests."""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from llm_gateway.app import create_app
from llm_gateway.settings import load_settings
from tests.conftest import AUTH, MASTER_KEY
from tests.fakes import faulty_server
from tests.fakes.faulty_server import Plan
from tests.fakes.server import serve_in_thread
from tests.integration.money import credit

# 10 prompt and 5 completion tokens an answer: 0.02 USD at these prices.
PRICING = {"input_per_mtok": "1000", "output_per_mtok": "2000"}
ANSWER_COST = "0.02"
QUICK = 0.3  # the "up-quick" provider's time to first byte and longest silence


def providers(upstream: str) -> list[dict[str, Any]]:
    base = {"kind": "openai", "api_base": f"{upstream}/v1", "api_key": faulty_server.API_KEY}
    return [
        {"name": "up", **base},
        {"name": "up-quick", **base, "first_byte_timeout_s": QUICK, "idle_timeout_s": QUICK},
        {"name": "up-total", **base, "timeout_s": 0.6},
        {"name": "down", "kind": "openai", "api_base": "http://127.0.0.1:9/v1", "api_key": "x"},
        {"name": "silent", "kind": "openai", "api_base": f"http://127.0.0.1:{unanswered_port()}/v1", "api_key": "x",
         "connect_timeout_s": QUICK},
    ]


_held: list[socket.socket] = []


@functools.cache
def unanswered_port() -> int:
    """A port whose TCP handshakes never complete, like a host behind a
    firewall that drops packets: it listens with a backlog of 0, already full
    of connections nobody accepts, so the kernel drops every further SYN. The
    sockets live as long as the test process."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    _held.append(listener)
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        _held.append(filler)
    return port


def model(name: str, *upstreams: str, provider: str = "up", **extra: Any) -> dict[str, Any]:
    """A priced model whose deployments are the fake's ``upstreams`` (``provider:upstream`` picks another)."""
    deployments = []
    for u in upstreams:
        p, _, m = u.rpartition(":")
        deployments.append({"provider": p or provider, "model": m})
    return {"name": name, "deployments": deployments, "pricing": PRICING, "max_output_tokens": 20, **extra}


def config(upstream: str, database_url: str, models: list[dict[str, Any]], routing: dict[str, Any],
           **extra: Any) -> dict[str, Any]:
    return {"providers": providers(upstream), "models": models, "routing": routing, "database_url": database_url,
            "master_key": MASTER_KEY, "limits": {"default_user": {"rpm": None, "tpm": None}},
            "cache": {"enabled": False}, **extra}


@dataclass
class FaultyStack:
    url: str
    upstream: str
    fake: Any  # the fake's Starlette app; plans and counters on .state
    database_url: str
    app: Any = None

    def plan(self, model: str, **plan: Any) -> None:
        self.fake.state.plans[model] = Plan(**plan)

    def calls(self, model: str) -> int:
        return int(self.fake.state.calls[model])

    def requests_by_id(self) -> dict[str, list[str]]:
        """Request id -> the upstream models it called, in order."""
        seen: dict[str, list[str]] = {}
        for model_name, rid in self.fake.state.log:
            seen.setdefault(rid, []).append(model_name)
        return seen


@contextmanager
def upstream() -> Iterator[tuple[str, Any]]:
    fake = faulty_server.create_app()
    server = serve_in_thread(fake)
    try:
        yield server.url, fake
    finally:
        server.stop()


@contextmanager
def faulty_gateway(folder: Path, models: list[dict[str, Any]], routing: dict[str, Any],
                   **extra: Any) -> Iterator[FaultyStack]:
    """The fake upstream and an in-thread gateway on a SQLite file."""
    database_url = f"sqlite+aiosqlite:///{folder}/gateway.db"
    with upstream() as (url, fake):
        path = folder / "gateway.yaml"
        path.write_text(yaml.safe_dump(config(url, database_url, models, routing, **extra)))
        app = create_app(load_settings(path, env={}))
        gateway = serve_in_thread(app)
        try:
            yield FaultyStack(gateway.url, url, fake, database_url, app)
        finally:
            gateway.stop()


def funded_key(stack_url: str, database_url: str, amount: str = "100") -> tuple[str, str]:
    """A new user with ``amount`` USD and an API key: (user id, key)."""
    user = httpx.post(f"{stack_url}/admin/users", json={"email": f"f{time.time_ns()}@example.com"},
                      headers=AUTH, timeout=10)
    assert user.status_code == 201, user.text
    made = httpx.post(f"{stack_url}/admin/users/{user.json()['id']}/keys", json={"name": "k"}, headers=AUTH,
                      timeout=10)
    assert made.status_code == 201, made.text
    credit(database_url, user.json()["id"], amount)
    return user.json()["id"], made.json()["key"]
