"""Shared fixtures: fake upstreams and a live gateway wired to them."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from llm_gateway.app import create_app
from llm_gateway.settings import load_settings
from tests.databases import database
from tests.fakes import openai_server
from tests.fakes.server import LiveServer, serve_in_thread

MASTER_KEY = "gw-test-master-key-0123456789abcdefghijklmnop"
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}


def has_fake(name: str) -> bool:
    return importlib.util.find_spec(f"tests.fakes.{name}_server") is not None


@dataclass
class Stack:
    """A running gateway and the fake upstreams behind it."""

    url: str
    fakes: dict[str, Any] = field(default_factory=dict)
    fakes_urls: dict[str, str] = field(default_factory=dict)
    servers: list[LiveServer] = field(default_factory=list)
    database_url: str = ""
    app: Any = None

    def requests_to(self, fake: str) -> list[dict[str, Any]]:
        return list(self.fakes[fake].state.requests)


def gateway_config(fake_urls: dict[str, str], database_url: str) -> dict[str, Any]:
    oai = fake_urls["openai"]
    providers: list[dict[str, Any]] = [
        {"name": "oai", "kind": "openai", "api_base": f"{oai}/v1", "api_key": openai_server.API_KEY},
        {"name": "compat", "kind": "openai_compatible", "api_base": f"{oai}/v1/",
         "api_key": openai_server.API_KEY},
        {"name": "oai-badkey", "kind": "openai", "api_base": f"{oai}/v1", "api_key": "sk-wrong-key-1234"},
        {"name": "oai-slow", "kind": "openai", "api_base": f"{oai}/v1", "api_key": openai_server.API_KEY,
         "timeout_s": 0.5},
        {"name": "azure", "kind": "openai_compatible", "api_base": f"{oai}/v1", "api_key": openai_server.API_KEY,
         "auth_header": "api-key", "query_params": {"api-version": "2024-10-21"}, "headers": {"x-tenant": "t1"}},
        {"name": "down", "kind": "openai", "api_base": "http://127.0.0.1:9/v1", "api_key": "x"},
    ]
    pricing = {"input_per_mtok": "0.15", "output_per_mtok": "0.60", "cached_input_per_mtok": "0.075"}
    models: list[dict[str, Any]] = [
        # Priced so that a few cents cover a few requests: money tests.
        {"name": "pricey", "deployments": [{"provider": "oai", "model": "gpt-4o-mini"}],
         "pricing": {"input_per_mtok": "1000", "output_per_mtok": "2000"}, "max_output_tokens": 50},
        {"name": "gpt-test", "deployments": [{"provider": "oai", "model": "gpt-4o-mini"}], "pricing": pricing},
        {"name": "compat-test", "deployments": [{"provider": "compat", "model": "llama-3"}]},
        {"name": "badkey-test", "deployments": [{"provider": "oai-badkey", "model": "gpt-4o-mini"}]},
        {"name": "slow-test", "deployments": [{"provider": "oai-slow", "model": "gpt-4o-mini"}]},
        {"name": "azure-test", "deployments": [{"provider": "azure", "model": "gpt-4o-deployment"}]},
        {"name": "down-test", "deployments": [{"provider": "down", "model": "gpt-4o-mini"}]},
        {"name": "emb-test", "mode": "embedding",
         "deployments": [{"provider": "oai", "model": "text-embedding-3-small"}],
         "pricing": {"input_per_mtok": "0.02", "output_per_mtok": "0"}},
    ]
    if "anthropic" in fake_urls:
        providers.append({"name": "ant", "kind": "anthropic", "api_base": f"{fake_urls['anthropic']}/v1",
                          "api_key": "test-anthropic-key"})
        models.append({"name": "claude-test", "deployments": [{"provider": "ant", "model": "claude-haiku-4-5"}],
                       "pricing": {"input_per_mtok": "1", "output_per_mtok": "5",
                                   "cached_input_per_mtok": "0.1"},
                       "max_output_tokens": 1024})
        providers.append({"name": "ant-bad", "kind": "anthropic", "api_base": f"{fake_urls['anthropic']}/v1",
                          "api_key": "sk-ant-wrong-key"})
        models.append({"name": "claude-badkey", "deployments": [{"provider": "ant-bad", "model": "claude-x"}]})
    if "gemini" in fake_urls:
        providers.append({"name": "gem", "kind": "gemini", "api_base": f"{fake_urls['gemini']}/v1beta",
                          "api_key": "test-gemini-key",
                          "fetch_private_image_urls": True})
        models.append({"name": "gemini-test", "deployments": [{"provider": "gem", "model": "gemini-2.5-flash"}],
                       "pricing": {"input_per_mtok": "0.30", "output_per_mtok": "2.50"}})
        providers.append({"name": "gem-bad", "kind": "gemini", "api_base": f"{fake_urls['gemini']}/v1beta",
                          "api_key": "gemini-wrong-key"})
        models.append({"name": "gemini-badkey", "deployments": [{"provider": "gem-bad", "model": "gemini-x"}]})
        models.append({"name": "gemini-emb", "mode": "embedding",
                       "deployments": [{"provider": "gem", "model": "gemini-embedding-001"}]})
    # Limits and the cache have tests of their own (tests/*/test_limits*, test_cache*); elsewhere
    # identical requests must each reach the upstream and be charged.
    # Retries and circuit breakers too (test_fault_tolerance*, test_fallbacks*): here each
    # steered failure is one upstream call, and failing on purpose never opens a circuit.
    return {"max_request_bytes": 65536, "providers": providers, "models": models, "database_url": database_url,
            "master_key": MASTER_KEY, "limits": {"default_user": {"rpm": None, "tpm": None}},
            "cache": {"enabled": False},
            "routing": {"retries": 0, "circuit_breaker": {"failure_threshold": 1_000_000}}}


@contextmanager
def running_stack(
    folder: Path, database_url: str, extra: dict[str, Any] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[Stack]:
    """Fake upstreams and a gateway wired to them, on ``database_url``;
    ``extra`` is merged into the gateway's config (top-level keys replace);
    ``edit`` may change the finished config in place."""
    fakes: dict[str, Any] = {"openai": openai_server.create_app()}
    for name in ("anthropic", "gemini"):
        if has_fake(name):
            module = importlib.import_module(f"tests.fakes.{name}_server")
            fakes[name] = module.create_app()
    servers = {name: serve_in_thread(app) for name, app in fakes.items()}
    config = folder / "gateway.yaml"
    data = gateway_config({n: s.url for n, s in servers.items()}, database_url) | (extra or {})
    if edit is not None:
        edit(data)
    config.write_text(yaml.safe_dump(data))
    app = create_app(load_settings(config, env={}))
    gateway = serve_in_thread(app)
    try:
        yield Stack(gateway.url, fakes, {n: s.url for n, s in servers.items()}, [gateway, *servers.values()],
                    database_url, app)
    finally:
        for server in (gateway, *servers.values()):
            server.stop()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("gw")
    with running_stack(folder, f"sqlite+aiosqlite:///{folder}/gateway.db") as running:
        yield running


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A gateway on SQLite and, again, on this machine's PostgreSQL."""
    folder = tmp_path_factory.mktemp("gwdb")
    with database(request.param, folder) as url, running_stack(folder, url) as running:
        running.database_url = url
        yield running


