"""Configuration: YAML, ${VAR} expansion, GATEWAY_* overrides, unknown keys,
errors that name the field, embedded defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llm_gateway.settings import ConfigError, load_settings

SPEC_EXAMPLE = """
database_url: sqlite+aiosqlite:///./data/gateway.db
redis_url: null
master_key: ${GATEWAY_MASTER_KEY:-}
max_request_bytes: 20971520
auth:
  jwt_secret: ${GATEWAY_JWT_SECRET:-}
  access_ttl_s: 900
  refresh_ttl_s: 2592000
  allow_signup: false
  external:
    jwks_url: https://idp.example/.well-known/jwks.json
    issuer: https://idp.example/
    audience: authenticated
    auto_create_users: true
providers:
  - name: openai
    kind: openai
    api_base: https://api.openai.com/v1
    api_key: ${OPENAI_API_KEY}
    timeout_s: 600
  - name: local-vllm
    kind: openai_compatible
    api_base: http://127.0.0.1:8000/v1
  - name: anthropic
    kind: anthropic
    api_key: ${ANTHROPIC_API_KEY:-sk-default}
models:
  - name: gpt-4o-mini
    deployments:
      - {provider: openai, model: gpt-4o-mini, weight: 1}
    pricing: {input_per_mtok: "0.15", output_per_mtok: "0.60", cached_input_per_mtok: "0.075"}
    max_output_tokens: 16384
    fallbacks: [claude-3-5-haiku]
  - name: claude-3-5-haiku
    deployments: [{provider: anthropic, model: claude-3-5-haiku-latest}]
limits:
  default_user: {rpm: 60, tpm: 200000}
  default_key: {rpm: null, tpm: null}
  global: {rpm: null, tpm: null}
cache:
  enabled: true
  ttl_s: 3600
  max_entries: 10000
  scope: user
routing:
  retries: 2
  backoff_base_s: 0.25
  circuit_breaker: {failure_threshold: 5, cooldown_s: 30}
observability:
  sentry_dsn: ${SENTRY_DSN:-}
  langfuse: {public_key: "${LANGFUSE_PUBLIC_KEY:-}", secret_key: "${LANGFUSE_SECRET_KEY:-}", host: "${LANGFUSE_HOST:-}"}
  log_bodies: false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_spec_example_loads_with_env(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, SPEC_EXAMPLE), env={"OPENAI_API_KEY": "sk-from-env"})
    assert s.provider("openai").api_key == "sk-from-env"
    assert s.provider("anthropic").api_key == "sk-default"
    assert s.provider("anthropic").base_url == "https://api.anthropic.com/v1"
    assert s.master_key == ""
    assert s.limits.default_user.rpm == 60
    assert str(s.models[0].pricing.cached_input_per_mtok) == "0.075"
    assert [m.name for m in s.models] == ["gpt-4o-mini", "claude-3-5-haiku", "mock"]


def test_gateway_overrides_top_level_scalars(tmp_path: Path) -> None:
    env = {"GATEWAY_DATABASE_URL": "postgresql+asyncpg://u@h/db", "GATEWAY_MAX_REQUEST_BYTES": "4096",
           "GATEWAY_MASTER_KEY": "mk-1"}
    s = load_settings(write(tmp_path, SPEC_EXAMPLE), env=env)
    assert s.database_url == "postgresql+asyncpg://u@h/db"
    assert s.max_request_bytes == 4096
    assert s.master_key == "mk-1"


@pytest.mark.parametrize(("text", "expected"), [
    ("providers: []\nbogus: 1\n", "bogus: unknown key"),
    ("providers:\n  - {name: a, kind: openai, colour: red}\n", "providers.0.colour: unknown key"),
    ("providers:\n  - {name: a, kind: carrier-pigeon}\n", "providers.0.kind"),
    ("providers:\n  - {name: a, kind: openai_compatible}\n", "api_base is required"),
    ("max_request_bytes: lots\n", "max_request_bytes"),
    ("models:\n  - {name: m, deployments: [{provider: nope, model: x}]}\n", "unknown provider 'nope'"),
    ("providers:\n  - {name: a, kind: mock}\nmodels:\n  - {name: m, deployments: [{provider: a, model: x}],"
     " fallbacks: [ghost]}\n", "unknown model 'ghost'"),
    ("models:\n  - {name: m, deployments: [{provider: mock, model: x}], pricing: {input_per_mtok: '-1'}}\n",
     "models.0.pricing.input_per_mtok"),
    ("- just\n- a list\n", "top level must be a mapping"),
    ("key: [unclosed\n", "invalid YAML"),
])
def test_errors_name_field_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), env={})
    assert expected in str(err.value)


def test_embedded_defaults_follow_environment() -> None:
    bare = load_settings(None, env={})
    assert [p.name for p in bare.providers] == ["mock"]
    assert [m.name for m in bare.models] == ["mock"]
    full = load_settings(None, env={"OPENAI_API_KEY": "a", "ANTHROPIC_API_KEY": "b", "GEMINI_API_KEY": "c"})
    names = {m.name for m in full.models}
    assert {"gpt-4o-mini", "text-embedding-3-small", "claude-sonnet-4-5", "gemini-2.5-flash", "mock"} <= names
    haiku = next(m for m in full.models if m.name == "claude-3-5-haiku")
    assert haiku.deployments[0].provider == "anthropic"
    assert str(haiku.pricing.output_per_mtok) == "4.00"


def test_config_file_from_env_var(tmp_path: Path) -> None:
    path = write(tmp_path, "providers: []\nmodels: []\n")
    s = load_settings(None, env={"GATEWAY_CONFIG": str(path)})
    assert [m.name for m in s.models] == ["mock"]


def test_check_config_cli_reports_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  - {name: a, kind: openai, colour: red}\n")
    proc = subprocess.run([sys.executable, "-m", "llm_gateway.cli", "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "providers.0.colour: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
    ok = write(tmp_path, SPEC_EXAMPLE)
    proc = subprocess.run([sys.executable, "-m", "llm_gateway.cli", "check-config", "--config", str(ok)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "model gpt-4o-mini -> openai/gpt-4o-mini" in proc.stdout


def test_migration_head_constant_matches_alembic() -> None:
    from llm_gateway.db import migrate

    assert migrate.head_revision() == migrate.HEAD
