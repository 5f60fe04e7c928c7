"""The built-in model catalogue (``catalogue.yaml``): current first-party
models with their list prices, turned into ``models:`` config entries; and
which configured models have no price at all."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # settings imports this module
    from llm_gateway.settings import Settings


@cache
def _load() -> dict[str, list[dict[str, Any]]]:
    text = resources.files("llm_gateway").joinpath("catalogue.yaml").read_text(encoding="utf-8")
    data: dict[str, list[dict[str, Any]]] = yaml.safe_load(text)
    return data


def catalogue_models(kind: str, provider_name: str) -> list[dict[str, Any]]:
    """Model entries for every catalogue model of ``kind``, served by ``provider_name``."""
    out: list[dict[str, Any]] = []
    for entry in _load().get(kind, []):
        pricing: dict[str, Any] = {"input_per_mtok": entry["input"], "output_per_mtok": entry["output"]}
        if "cached_input" in entry:
            pricing["cached_input_per_mtok"] = entry["cached_input"]
        model: dict[str, Any] = {
            "name": entry["name"],
            "mode": entry["mode"],
            "deployments": [{"provider": provider_name, "model": entry.get("upstream", entry["name"])}],
            "pricing": pricing,
        }
        if "max_output_tokens" in entry:
            model["max_output_tokens"] = entry["max_output_tokens"]
        out.append(model)
    return out


def unpriced_models(settings: Settings) -> list[str]:
    """Models served by a real provider whose config sets no price at all.

    A missing ``pricing`` means zero, so such a model is free for every
    caller, a user with a zero balance included: almost always an oversight
    worth a warning. Prices written out as ``"0"`` (the built-in ``mock``
    model's) are free on purpose and not listed, nor is a model that only
    the in-process mock provider serves.
    """
    mock = {p.name for p in settings.providers if p.kind == "mock"}
    return [
        m.name for m in settings.models
        if not m.pricing.model_fields_set and any(d.provider not in mock for d in m.deployments)
    ]


def unpriced_warning(names: list[str]) -> str:
    """The one start-up line about ``unpriced_models``."""
    return (f"{len(names)} model(s) have no pricing and are free for every caller, even with a zero balance: "
            f"{', '.join(names)}; give each a pricing (prices of \"0\" make it free on purpose)")
