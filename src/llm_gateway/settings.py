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
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llm_gateway.catalogue import catalogue_models

ProviderKind = Literal["openai", "anthropic", "gemini", "openai_compatible", "mock", "litellm"]

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
    # One attempt's limits (504 when passed; a timed-out attempt is retried):
    # total (a whole stream included), TCP connect, time to the answer's first
    # byte, and the longest silence between a stream's chunks (null: only the
    # total bounds them). A model may override each. A null first byte means
    # 120 s for a stream (so a hung provider is retried well within the
    # request's deadline) and no limit for a non-streamed answer, whose first
    # byte comes only once it is complete. The request's deadline caps them all.
    timeout_s: float = Field(default=600.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    first_byte_timeout_s: float | None = Field(default=None, gt=0)
    idle_timeout_s: float | None = Field(default=None, gt=0)
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
    # litellm only: handed to LiteLLM as they are (aws_region_name, api_version, …).
    litellm_params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_base(self) -> ProviderSettings:
        if self.kind in ("openai_compatible",) and not self.api_base:
            raise ValueError("api_base is required for kind openai_compatible")
        if self.api_base is not None and not re.match(r"^https?://", self.api_base):
            raise ValueError("api_base must start with http:// or https://")
        if self.litellm_params and self.kind != "litellm":
            raise ValueError("litellm_params applies to kind litellm only")
        return self

    @property
    def base_url(self) -> str:
        base = self.api_base or DEFAULT_API_BASES.get(self.kind, "")
        return base.rstrip("/")


class Pricing(_Strict):
    # Where the prices come from, shown in /v1/models: the config (or the
    # built-in catalogue), or LiteLLM's bundled price map (a subclass).
    source: ClassVar[str] = "config"

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
    # How traffic is spread over the deployments: by weight at random, to the
    # fewest in flight (relative to weight), or to the lowest moving-average latency.
    strategy: Literal["weighted", "least_busy", "lowest_latency"] = "weighted"
    # Per-model overrides of the providers' timeouts (null: the provider's).
    timeout_s: float | None = Field(default=None, gt=0)
    connect_timeout_s: float | None = Field(default=None, gt=0)
    first_byte_timeout_s: float | None = Field(default=None, gt=0)
    idle_timeout_s: float | None = Field(default=None, gt=0)
    # Per-model overrides of the request's deadline (null: routing's).
    request_timeout_s: float | None = Field(default=None, gt=0)
    stream_request_timeout_s: float | None = Field(default=None, gt=0)
    # Limits on the model as a whole, summed over every caller.
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)


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
    # With redis_url set and Redis unreachable: fall back to in-process limits
    # (fail_open) or refuse with 503 (fail_closed).
    failure_mode: Literal["fail_open", "fail_closed"] = "fail_open"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CacheSettings(_Strict):
    enabled: bool = True
    ttl_s: int = Field(default=3600, gt=0)
    max_entries: int = Field(default=10_000, ge=1)
    scope: Literal["user", "global"] = "user"
    # Answers larger than this are not cached.
    max_entry_bytes: int = Field(default=1_048_576, ge=1024)
    # Charge a hit what the original answer cost (default: hits are free).
    charge_hits: bool = False


class ResponsesSettings(_Strict):
    """``/v1/responses`` conversation state (docs/responses-api.md)."""

    # How long a stored response (``store``, the default) can be read and
    # continued (``previous_response_id``); then it is deleted. OpenAI keeps 30 days.
    store_ttl_s: int = Field(default=2_592_000, gt=0, le=10 * 365 * 86400)
    # The most a stored conversation (its input items and last answer) may
    # hold; continuing a longer one is refused with 400.
    max_stored_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024**3)


class CircuitBreakerSettings(_Strict):
    """How a deployment's circuit judges it (docs/routing.md, "Circuit breaker").

    ``error_rate`` (the default): open when, over the last ``window_s``, at
    least ``min_calls`` attempts ended and ``failure_rate`` of them failed,
    or when ``min_calls`` attempts in a row failed however long that took.
    ``consecutive``: open after ``failure_threshold`` failures in a row, the
    breaker of earlier releases. A config that sets ``failure_threshold``
    without ``mode`` (as SPEC §2's example does) keeps that breaker, with its
    one trial, so that it means what it meant.
    """

    mode: Literal["error_rate", "consecutive"] = "error_rate"
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    min_calls: int = Field(default=20, ge=1)
    window_s: float = Field(default=30.0, gt=0)
    failure_threshold: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)
    # Trials one after another once cooled down; this many successes close it.
    half_open_trials: int = Field(default=3, ge=1)
    # Below this share of a model's deployments closed, its traffic goes to all
    # of them again, open or not (Envoy's panic threshold); 0 turns it off.
    panic_threshold: float = Field(default=0.5, ge=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        mode = data.get("mode")
        if mode is None and "failure_threshold" in data:
            mode = "consecutive"
            data = {"mode": mode, **data}
        if mode == "consecutive" and "half_open_trials" not in data:
            data = {**data, "half_open_trials": 1}
        if mode in (None, "error_rate") and "failure_threshold" in data:
            raise ValueError("failure_threshold applies to mode: consecutive; "
                             "mode error_rate opens on failure_rate over min_calls")
        return data


class RoutingSettings(_Strict):
    retries: int = Field(default=2, ge=0)
    backoff_base_s: float = Field(default=0.25, ge=0)
    # The longest the gateway waits before retrying a deployment (backoff or the
    # provider's Retry-After); a longer Retry-After is not waited for: the
    # request moves on to another deployment or a fallback, or gets the error.
    max_retry_wait_s: float = Field(default=10.0, ge=0)
    # One deadline per request across all its attempts, retries, backoff waits
    # and fallbacks (504 upstream_timeout when it passes); a client may ask for
    # less with ``x-gateway-timeout``. A non-streamed answer is bounded by
    # ``request_timeout_s``; a stream, first byte to last, by
    # ``stream_request_timeout_s``: a long answer is worth streaming, and a
    # client waiting on a plain one is rarely prepared to wait as long.
    request_timeout_s: float = Field(default=120.0, gt=0)
    stream_request_timeout_s: float = Field(default=600.0, gt=0)
    circuit_breaker: CircuitBreakerSettings = Field(default_factory=CircuitBreakerSettings)


class LangfuseSettings(_Strict):
    """Langfuse tracing, on when both keys are set; sent in the background."""

    public_key: str = ""
    secret_key: str = ""
    host: str = ""  # empty: https://cloud.langfuse.com
    # Traces wait in a bounded queue: past max_queue new ones are dropped (and
    # counted) instead of growing memory while Langfuse is slow or down.
    max_queue: int = Field(default=10_000, ge=1)
    batch_size: int = Field(default=100, ge=1, le=1000)
    flush_interval_s: float = Field(default=1.0, gt=0, le=60)
    timeout_s: float = Field(default=5.0, gt=0, le=60)

    @property
    def enabled(self) -> bool:
        return bool(self.public_key and self.secret_key)

    @property
    def base_url(self) -> str:
        return (self.host or "https://cloud.langfuse.com").rstrip("/")

    @model_validator(mode="after")
    def _check(self) -> LangfuseSettings:
        if bool(self.public_key) != bool(self.secret_key):
            raise ValueError("set both public_key and secret_key (or neither)")
        if self.host and not re.match(r"^https?://[^/]", self.host):
            raise ValueError("host must start with http:// or https://")
        return self


class ObservabilitySettings(_Strict):
    sentry_dsn: str = ""
    langfuse: LangfuseSettings = Field(default_factory=LangfuseSettings)
    # Message contents (prompts and answers) go to Langfuse and Sentry only when true.
    log_bodies: bool = False
    # When set, GET /metrics needs "Authorization: Bearer <metrics_token>".
    metrics_token: str = ""

    @field_validator("sentry_dsn")
    @classmethod
    def _check_dsn(cls, v: str) -> str:
        if not v:
            return v
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.username or not parts.hostname \
                or not parts.path.strip("/"):
            raise ValueError("not a Sentry DSN (expected https://<public key>@<host>/<project id>)")
        return v


def placeholder_problem(secret: str) -> str | None:
    """Why ``secret`` cannot guard a production gateway, or None. Empty is
    fine: the gateway then generates one and keeps it in the database."""
    if not secret:
        return None
    folded = secret.strip().lower()
    if (folded.startswith("<") and folded.endswith(">")) or any(w in folded for w in _PLACEHOLDER_WORDS) \
            or folded in _PLACEHOLDER_VALUES or len(set(folded)) < 4:
        return "is a placeholder"
    if len(secret) < 32:  # HS256 wants a key of at least 256 bits (RFC 7518 §3.2)
        return "is too short (at least 32 characters)"
    return None


_PLACEHOLDER_WORDS = ("changeme", "change-me", "change_me", "changethis", "placeholder", "replace-me", "replaceme",
                      "your-", "your_", "xxxx", "example")
_PLACEHOLDER_VALUES = {"secret", "password", "master", "masterkey", "master-key", "admin", "default", "none", "null"}


class BillingSettings(_Strict):
    # An open reservation that its process stops renewing (the process died)
    # is released by any process's sweep this long after its last renewal.
    reservation_ttl_s: float = Field(default=120, ge=2, le=86400)
    # Charges the database could not take yet (it is down) are kept in memory
    # and retried; past ``journal_after`` of them, and at shutdown, they go to
    # files in this folder, replayed when a gateway starts.
    journal_dir: str = "./data/money-journal"
    journal_after: int = Field(default=10_000, ge=1, le=10_000_000)
    # How long an answer waits for its charge to be committed before it goes
    # out anyway (the charge stays owed and is retried).
    settle_wait_s: float = Field(default=2.0, ge=0, le=60)
    # PostgreSQL: whether a reservation or charge waits for its WAL flush
    # before the request goes on. Off (the default), a commit returns as
    # soon as it is visible: a crash of the PostgreSQL server (not of a
    # gateway) can lose the money writes of its last ~0.6 s (three
    # wal_writer_delay), a consistent prefix: never an overdraft, the ledger
    # still equals the balance. On: nothing committed is ever lost, and each
    # request waits for two disk flushes. Credits, keys and users are
    # always committed synchronously.
    synchronous_commit: bool = False


class UiSettings(_Strict):
    enabled: bool = True  # the dashboard at /ui/


class Settings(_Strict):
    # "production" refuses placeholder secrets at start-up (the Docker image sets it).
    environment: Literal["development", "production"] = "development"
    database_url: str = "sqlite+aiosqlite:///./data/gateway.db"
    redis_url: str | None = None
    master_key: str = ""
    max_request_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, le=1024**3)
    # A client must send a request's headers within this (slowloris), and
    # never pause longer than this between two pieces of its body; else the
    # connection is closed. Like nginx's client_header_timeout and client_body_timeout.
    http_header_timeout_s: float = Field(default=10, gt=0, le=3600)
    http_body_timeout_s: float = Field(default=30, gt=0, le=3600)
    # Usage records are written in batches this often (and at shutdown).
    usage_flush_interval_s: float = Field(default=0.25, gt=0, le=300)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    providers: list[ProviderSettings] = Field(default_factory=list)
    models: list[ModelSettings] = Field(default_factory=list)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    billing: BillingSettings = Field(default_factory=BillingSettings)
    ui: UiSettings = Field(default_factory=UiSettings)

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

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment != "production":
            return self
        for name, secret in (("master_key", self.master_key), ("auth.jwt_secret", self.auth.jwt_secret)):
            problem = placeholder_problem(secret)
            if problem is not None:
                raise ValueError(f"{name} {problem}; in production set a real secret "
                                 "(or leave it empty to have one generated and stored)")
        return self

    def provider(self, name: str) -> ProviderSettings:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)


# ---------------------------------------------------------------- loading

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_OVERRIDABLE = ("database_url", "redis_url", "master_key", "max_request_bytes", "usage_flush_interval_s",
                "environment", "http_header_timeout_s", "http_body_timeout_s")

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
    observability = {
        "sentry_dsn": env.get("SENTRY_DSN", ""),
        "langfuse": {"public_key": env.get("LANGFUSE_PUBLIC_KEY", ""),
                     "secret_key": env.get("LANGFUSE_SECRET_KEY", ""), "host": env.get("LANGFUSE_HOST", "")},
    }
    return {"providers": providers, "master_key": env.get("GATEWAY_MASTER_KEY", ""), "observability": observability}


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
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None
    if any(p.kind == "litellm" for p in settings.providers):
        from llm_gateway.providers.litellm.config import prepare  # (imports no LiteLLM)

        settings = prepare(settings)
    return settings
