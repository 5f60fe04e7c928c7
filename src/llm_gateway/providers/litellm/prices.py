"""Prices from LiteLLM's bundled price map, read as a JSON file from inside
the installed ``litellm`` package: the SDK is not imported (its import takes
seconds and a few hundred MB), and nothing is fetched from the network."""

from __future__ import annotations

import importlib.util
import json
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from llm_gateway.settings import Pricing

PRICE_MAP_FILE = "model_prices_and_context_window_backup.json"
_MILLION = Decimal(1_000_000)


class BundledPricing(Pricing):
    """Prices taken from LiteLLM's bundled map, not from the config."""

    source = "litellm"


def price_map_path() -> Path | None:
    """Where the installed ``litellm`` package keeps its price map, found
    without importing the package; ``None`` when it is not installed."""
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / PRICE_MAP_FILE
    return path if path.is_file() else None


@cache
def _load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _per_mtok(value: Any) -> Decimal | None:
    """A per-token price of the map (a JSON number) as an exact per-million
    price: the float's shortest repr (``1.5e-07``) is the decimal written
    in the file."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return (Decimal(repr(value)) * _MILLION).normalize()


def _entry(prices: dict[str, Any], model: str) -> dict[str, Any] | None:
    """The map's entry for a LiteLLM model string: the whole string, or what
    follows its provider prefix when the entry is that provider's (so that
    ``hosted_vllm/gpt-4o-mini`` is not priced as OpenAI's model)."""
    entry = prices.get(model)
    if isinstance(entry, dict):
        return entry
    prefix, _, rest = model.partition("/")
    entry = prices.get(rest) if rest else None
    if not isinstance(entry, dict):
        return None
    owner = str(entry.get("litellm_provider", ""))
    return entry if owner and (owner.startswith(prefix) or prefix.startswith(owner)) else None


def bundled_pricing(model: str, path: Path | None = None) -> BundledPricing | None:
    """The map's prices for ``model`` (a LiteLLM model string), or ``None``
    when the map does not know it or LiteLLM is not installed."""
    path = path or price_map_path()
    if path is None:
        return None
    entry = _entry(_load(path), model)
    if entry is None:
        return None
    input_price = _per_mtok(entry.get("input_cost_per_token"))
    output_price = _per_mtok(entry.get("output_cost_per_token", 0))
    if input_price is None or output_price is None:
        return None
    cached = _per_mtok(entry.get("cache_read_input_token_cost"))
    return BundledPricing(input_per_mtok=input_price, output_per_mtok=output_price, cached_input_per_mtok=cached)
