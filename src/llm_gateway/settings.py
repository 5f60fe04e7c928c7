"""Validated settings, built once at start-up (SPEC §2).

Load order: YAML file (``--config`` or ``GATEWAY_CONFIG``) or the embedded
defaults; ``${VAR}`` / ``${VAR:-default}`` expanded from the environment in
every string; then ``GATEWAY_<UPPER_NAME>`` overrides top-level scalars.
Unknown keys are errors. Nothing here reads the environment at import time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llm_gateway.catalogue import catalogue_models

ProviderKind = Literal["openai", "anthropic", "gemini", "openai_compatible", "mock"]

DEFAULT_API_BASES: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}
ENV_KEYS: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
}


class ConfigError(Exception):
    """A configuration problem, phrased for an operator (field and problem)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderSettings(_Strict):
    name: str = Field(min_length=1)
    kind: ProviderKind
    api_base: str | None = None
    api_key: str | None = None
    timeout_s: float = Field(default=600.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    # openai_compatible: the header that carries the key ("authorization" sends
    # "Bearer <key>"; Azure OpenAI uses "api-key") and extra query parameters
    # (Azure's api-version).
    auth_header: str = "authorization"
    query_params: dict[str, str] = Field(default_factory=dict)
    max_connections: int = Field(default=1000, ge=1)
    # gemini only: the gateway fetches http(s) image URLs itself (Gemini cannot);
    # URLs that resolve to private, loopback or link-local addresses are refused
    # unless this is true.
    fetch_private_image_urls: bool = False
    # mock only: per-request latency before the first byte, and chunks per stream.
    latency_ms: float = Field(default=0.0, ge=0)
    chunks: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check_base(self) -> ProviderSettings:
        if self.kind in ("openai_compatible",) and not self.api_base:
            raise ValueError("api_base is required for kind openai_compatible")
        if self.api_base is not None and not re.match(r"^https?://", self.api_base):
            raise ValueError("api_base must start with http:// or https://")
        return self

    @property
    def base_url(self) -> str:
        base = self.api_base or DEFAULT_API_BASES.get(self.kind, "")
        return base.rstrip("/")


class Pricing(_Strict):
    input_per_mtok: Decimal = Decimal(0)
    output_per_mtok: Decimal = Decimal(0)
    cached_input_per_mtok: Decimal | None = None

    @field_validator("input_per_mtok", "output_per_mtok", "cached_input_per_mtok")
    @classmethod
    def _non_negative(cls, v: Decimal | None) -> Decimal | None:
        if v is not None and v < 0:
            raise ValueError("prices cannot be negative")
        return v


class Deployment(_Strict):
    provider: str
    model: str
    weight: float = Field(default=1.0, gt=0)


class ModelSettings(_Strict):
    name: str = Field(min_length=1)
    deployments: list[Deployment] = Field(min_length=1)
    pricing: Pricing = Field(default_factory=Pricing)
    max_output_tokens: int = Field(default=4096, ge=1)
    fallbacks: list[str] = Field(default_factory=list)
    mode: Literal["chat", "embedding"] = "chat"


class ExternalAuth(_Strict):
    jwks_url: str
    issuer: str | None = None
    audience: str | None = None
    auto_create_users: bool = False


class AuthSettings(_Strict):
    jwt_secret: str = ""
    access_ttl_s: int = Field(default=900, gt=0)
    refresh_ttl_s: int = Field(default=2_592_000, gt=0)
    allow_signup: bool = False
    external: ExternalAuth | None = None


class Limit(_Strict):
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)


class LimitsSettings(_Strict):
    default_user: Limit = Field(default_factory=lambda: Limit(rpm=60, tpm=200_000))
    default_key: Limit = Field(default_factory=Limit)
    global_: Limit = Field(default_factory=Limit, alias="global")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CacheSettings(_Strict):
    enabled: bool = True
    ttl_s: int = Field(default=3600, gt=0)
    max_entries: int = Field(default=10_000, ge=1)
    scope: Literal["user", "global"] = "user"


class CircuitBreakerSettings(_Strict):
    failure_threshold: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)


class RoutingSettings(_Strict):
    retries: int = Field(default=2, ge=0)
    backoff_base_s: float = Field(default=0.25, ge=0)
    circuit_breaker: CircuitBreakerSettings = Field(default_factory=CircuitBreakerSettings)


class LangfuseSettings(_Strict):
    public_key: str = ""
    secret_key: str = ""
    host: str = ""


class ObservabilitySettings(_Strict):
    sentry_dsn: str = ""
    langfuse: LangfuseSettings = Field(default_factory=LangfuseSettings)
    log_bodies: bool = False


class Settings(_Strict):
    database_url: str = "sqlite+aiosqlite:///./data/gateway.db"
    redis_url: str | None = None
    master_key: str = ""
    max_request_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    # Usage records are written in batches this often (and at shutdown).
    usage_flush_interval_s: float = Field(default=0.25, gt=0, le=300)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    providers: list[ProviderSettings] = Field(default_factory=list)
    models: list[ModelSettings] = Field(default_factory=list)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if v in ("", "null", "none") else v

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        providers = {p.name for p in self.providers}
        if len(providers) != len(self.providers):
            raise ValueError("provider names must be unique")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"model names must be unique (repeated: {', '.join(dupes)})")
        known = set(names)
        for i, m in enumerate(self.models):
            for j, d in enumerate(m.deployments):
                if d.provider not in providers:
                    raise ValueError(
                        f"models[{i}].deployments[{j}].provider: unknown provider {d.provider!r}"
                    )
            for f in m.fallbacks:
                if f not in known:
                    raise ValueError(f"models[{i}].fallbacks: unknown model {f!r}")
                if f == m.name:
                    raise ValueError(f"models[{i}].fallbacks: a model cannot fall back to itself")
        return self

    def provider(self, name: str) -> ProviderSettings:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)


# ---------------------------------------------------------------- loading

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_OVERRIDABLE = ("database_url", "redis_url", "master_key", "max_request_bytes", "usage_flush_interval_s")

MOCK_PROVIDER: dict[str, Any] = {"name": "mock", "kind": "mock"}
MOCK_MODEL: dict[str, Any] = {
    "name": "mock",
    "deployments": [{"provider": "mock", "model": "mock"}],
    "pricing": {"input_per_mtok": "0", "output_per_mtok": "0"},
    "max_output_tokens": 4096,
}


def expand_env(value: Any, env: Mapping[str, str]) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of ``value``."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            got = env.get(m.group(1))
            if got:
                return got
            return m.group(2) if m.group(2) is not None else ""

        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    return value


def embedded_defaults(env: Mapping[str, str]) -> dict[str, Any]:
    """SPEC §1: the providers whose key is in the environment, their catalogue
    models, and the mock model."""
    providers: list[dict[str, Any]] = []
    for kind, var in ENV_KEYS.items():
        if env.get(var):
            providers.append({"name": kind, "kind": kind, "api_key": env[var]})
    return {"providers": providers, "master_key": env.get("GATEWAY_MASTER_KEY", "")}


def _with_builtin_models(data: dict[str, Any]) -> dict[str, Any]:
    """Add catalogue models for configured first-party providers when the file
    lists no models, and the mock provider and model unless already defined."""
    data = dict(data)
    providers = list(data.get("providers") or [])
    models = list(data.get("models") or [])
    if "models" not in data or data.get("models") is None:
        for p in providers:
            if isinstance(p, dict) and p.get("kind") in ENV_KEYS:
                models.extend(catalogue_models(str(p["kind"]), str(p.get("name", p["kind"]))))
    names = {p.get("name") for p in providers if isinstance(p, dict)}
    if "mock" not in names:
        providers.append(dict(MOCK_PROVIDER))
    if not any(isinstance(m, dict) and m.get("name") == "mock" for m in models):
        models.append(dict(MOCK_MODEL))
    data["providers"] = providers
    data["models"] = models
    return data


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{loc}: {msg}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build the validated settings; raise ``ConfigError`` naming field and problem."""
    env = os.environ if env is None else env
    path = path or env.get("GATEWAY_CONFIG") or None
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = expand_env(data, env)
    else:
        data = embedded_defaults(env)
    for name in _OVERRIDABLE:
        override = env.get(f"GATEWAY_{name.upper()}")
        if override is not None and override != "":
            data[name] = override
    data = _with_builtin_models(data)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None
