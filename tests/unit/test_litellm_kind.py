"""The ``litellm`` kind's pure parts: prices from a LiteLLM price map, the
mapping of LiteLLM's exceptions, the request it is given, and the start-up
checks (the extra missing; models priced from the map)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.errors import (
    UpstreamAuthRejected,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from llm_gateway.providers.base import Target
from llm_gateway.providers.litellm import config, to_wire
from llm_gateway.providers.litellm.errors import map_exception
from llm_gateway.providers.litellm.prices import bundled_pricing
from llm_gateway.settings import ConfigError, ProviderSettings, load_settings
from llm_gateway.types import ChatRequest, ImagePart, Message, TextPart

SAMPLE = Path(__file__).parents[1] / "fixtures" / "litellm" / "model_prices_sample.json"


@pytest.mark.parametrize(("model", "prices"), [
    ("openai/gpt-4o-mini", ("0.15", "0.6", "0.075")),
    ("gpt-4o-mini", ("0.15", "0.6", "0.075")),
    ("bedrock/anthropic.claude-3-5-haiku-20241022-v1:0", ("0.8", "4", "0.08")),
    ("azure/gpt-4o", ("2.5", "10", None)),
    ("vertex_ai/gemini-2.5-flash", ("0.3", "2.5", None)),
    ("openai/text-embedding-3-small", ("0.02", "0", None)),
])
def test_bundled_prices_are_exact_per_million(model: str, prices: tuple[str, str, str | None]) -> None:
    got = bundled_pricing(model, SAMPLE)
    assert got is not None and got.source == "litellm"
    cached = None if prices[2] is None else Decimal(prices[2])
    assert (got.input_per_mtok, got.output_per_mtok, got.cached_input_per_mtok) == (
        Decimal(prices[0]), Decimal(prices[1]), cached)


@pytest.mark.parametrize("model", [
    "hosted_vllm/gpt-4o-mini",  # another provider's model of the same name: not OpenAI's price
    "azure/my-deployment", "bedrock/unknown", "openai/odd-model",
])
def test_models_the_map_cannot_price(model: str) -> None:
    assert bundled_pricing(model, SAMPLE) is None


class RateLimitError(Exception):
    status_code = 429
    litellm_response_headers = {"retry-after": "2"}


class AuthenticationError(Exception):
    status_code = 401


class BadRequestError(Exception):
    status_code = 400


class NotFoundError(Exception):
    status_code = 404


class InternalServerError(Exception):
    status_code = 500


class Timeout(Exception):
    status_code = 408


class APIConnectionError(Exception):
    status_code = 500


def test_exceptions_map_into_the_error_tree() -> None:
    err = map_exception(RateLimitError("litellm.RateLimitError: AnthropicException - "
                                       '{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}'),
                        "ll")
    assert isinstance(err, UpstreamRateLimited) and err.status_code == 429 and err.retry_after == 2
    assert err.message == "Slow down"

    err = map_exception(AuthenticationError("litellm.AuthenticationError: OpenAIException - key sk-abc123 is bad"),
                        "ll")
    assert isinstance(err, UpstreamAuthRejected) and err.status_code == 502
    assert "sk-abc123" not in err.message and "sk-abc123" not in (err.cause or "")

    err = map_exception(BadRequestError("litellm.BadRequestError: GeminiException BadRequestError - "
                                        '{"error":{"code":400,"message":"Bad argument.","status":"INVALID"}}'), "ll")
    assert isinstance(err, UpstreamRejected) and err.status_code == 400 and err.message == "Bad argument."
    assert err.cause == "HTTP 400: Bad argument."

    err = map_exception(NotFoundError("litellm.NotFoundError: OpenAIException - The model `x` does not exist"), "ll")
    assert err.status_code == 404 and err.code == "model_not_found" and err.message == "The model `x` does not exist"

    err = map_exception(InternalServerError("litellm.InternalServerError: OpenAIException - oops"), "ll")
    assert type(err) is UpstreamError and err.retryable and err.status_code == 502

    err = map_exception(Timeout("litellm.Timeout: APITimeoutError - Request timed out."), "ll")
    assert isinstance(err, UpstreamTimeout) and err.status_code == 504 and err.retryable

    for exc in (APIConnectionError("boom"), InternalServerError("AnthropicException - Cannot connect to host x")):
        err = map_exception(exc, "ll")
        assert type(err) is UpstreamError and err.message == "Could not connect to the ll provider."

    err = map_exception(ValueError("something LiteLLM did not expect"), "ll")
    assert type(err) is UpstreamError and err.status_code == 502  # never a 500


def test_request_carries_params_and_max_tokens_and_no_retries_of_litellms_own() -> None:
    settings = ProviderSettings(name="bedrock", kind="litellm", api_key="k",
                                litellm_params={"aws_region_name": "us-east-1", "num_retries": 3})
    conn = to_wire.connection(settings, "req_1")
    assert conn["aws_region_name"] == "us-east-1" and conn["api_key"] == "k" and "api_base" not in conn
    assert conn["num_retries"] == 0 and conn["max_retries"] == 0
    assert conn["extra_headers"] == {"x-request-id": "req_1"}
    req = ChatRequest(model="m", messages=[Message("user", [TextPart("hi"), ImagePart("https://x/a.png")])])
    data_url = "data:image/png;base64,AA=="
    kwargs = to_wire.chat_kwargs(req, Target("bedrock/anthropic.claude", 300), {"https://x/a.png": data_url})
    assert kwargs["model"] == "bedrock/anthropic.claude" and kwargs["max_tokens"] == 300
    assert kwargs["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": data_url}}


def _config(tmp_path: Path, models: list[dict[str, Any]]) -> Path:
    import yaml

    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({
        "providers": [{"name": "bedrock", "kind": "litellm", "litellm_params": {"aws_region_name": "us-east-1"}}],
        "models": models}))
    return path


def test_without_the_extra_the_config_is_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "price_map_path", lambda: None)
    path = _config(tmp_path, [{"name": "c", "deployments": [{"provider": "bedrock", "model": "bedrock/x"}]}])
    with pytest.raises(ConfigError, match=r"pip install 'llm-gateway\[litellm\]'"):
        load_settings(path, env={})


def test_unpriced_models_take_the_maps_prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "price_map_path", lambda: SAMPLE)
    monkeypatch.setattr(config, "bundled_pricing", lambda model: bundled_pricing(model, SAMPLE))
    haiku = "bedrock/anthropic.claude-3-5-haiku-20241022-v1:0"
    path = _config(tmp_path, [
        {"name": "haiku", "deployments": [{"provider": "bedrock", "model": haiku}]},
        {"name": "mine", "deployments": [{"provider": "bedrock", "model": haiku}],
         "pricing": {"input_per_mtok": "1", "output_per_mtok": "2"}},
        {"name": "both", "deployments": [{"provider": "bedrock", "model": haiku},
                                         {"provider": "bedrock", "model": "azure/gpt-4o"}]},
        {"name": "unknown", "deployments": [{"provider": "bedrock", "model": "bedrock/unknown"}]},
    ])
    models = {m.name: m.pricing for m in load_settings(path, env={}).models}
    assert (models["haiku"].source, models["haiku"].input_per_mtok, models["haiku"].output_per_mtok) == (
        "litellm", Decimal("0.8"), Decimal(4))
    assert (models["mine"].source, models["mine"].input_per_mtok) == ("config", Decimal(1))
    # Deployments priced differently: the dearest price of each kind, so none is served below cost.
    assert (models["both"].input_per_mtok, models["both"].output_per_mtok, models["both"].cached_input_per_mtok) == (
        Decimal("2.5"), Decimal(10), None)
    assert not models["unknown"].model_fields_set  # left unpriced (and warned about at start-up)


def test_litellm_params_belong_to_the_litellm_kind() -> None:
    with pytest.raises(ValueError, match="litellm_params applies to kind litellm only"):
        ProviderSettings(name="o", kind="openai", litellm_params={"x": 1})


def test_the_readmes_litellm_examples_are_valid_configs(tmp_path: Path) -> None:
    pytest.importorskip("litellm")
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "kind: litellm" in b]
    assert len(blocks) == 2  # Bedrock and Azure
    for i, block in enumerate(blocks):
        path = tmp_path / f"example{i}.yaml"
        path.write_text(block)
        settings = load_settings(path, env={"AZURE_API_KEY": "k"})
        kinds = {p.name: p.kind for p in settings.providers}
        assert "litellm" in kinds.values()
    bedrock = load_settings(tmp_path / "example0.yaml", env={})
    priced = next(m for m in bedrock.models if m.name == "claude-on-bedrock").pricing
    assert (priced.source, priced.input_per_mtok, priced.output_per_mtok) == ("litellm", Decimal("0.8"), Decimal(4))
