"""Start-up checks of a config with ``litellm`` providers (called by
``load_settings`` only when there is one): the extra must be installed, and
models without a price of their own are priced from LiteLLM's bundled map."""

from __future__ import annotations

from llm_gateway.providers.litellm.prices import BundledPricing, bundled_pricing, price_map_path
from llm_gateway.settings import ConfigError, ModelSettings, Settings

EXTRA = "pip install 'llm-gateway[litellm]'"


def missing_extra(provider: str) -> ConfigError:
    return ConfigError(f"provider {provider!r} has kind litellm, but LiteLLM is not installed: "
                       f"install the litellm extra ({EXTRA})")


def prepare(settings: Settings) -> Settings:
    """The settings, with bundled prices for unpriced models served through
    LiteLLM; ``ConfigError`` naming the extra when LiteLLM is not installed."""
    litellm = [p.name for p in settings.providers if p.kind == "litellm"]
    if not litellm:
        return settings
    path = price_map_path()
    if path is None:
        raise missing_extra(litellm[0])
    models = [_priced(m, set(litellm)) for m in settings.models]
    return settings.model_copy(update={"models": models})


def _priced(model: ModelSettings, litellm: set[str]) -> ModelSettings:
    """A model that sets no pricing and whose deployments all go through
    LiteLLM takes the map's prices, the highest of its deployments' (so no
    deployment is served below its cost); left as it is when the map knows
    none of them."""
    if model.pricing.model_fields_set or not all(d.provider in litellm for d in model.deployments):
        return model
    found = [p for p in (bundled_pricing(d.model) for d in model.deployments) if p is not None]
    if not found:
        return model
    cached = [p.cached_input_per_mtok for p in found if p.cached_input_per_mtok is not None]
    pricing = BundledPricing(
        input_per_mtok=max(p.input_per_mtok for p in found),
        output_per_mtok=max(p.output_per_mtok for p in found),
        cached_input_per_mtok=max(cached) if len(cached) == len(found) else None,
    )
    return model.model_copy(update={"pricing": pricing})
