"""The built-in model catalogue (``catalogue.yaml``): current first-party
models with their list prices, turned into ``models:`` config entries."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml


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
