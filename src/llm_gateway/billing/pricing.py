"""Exact cost of a request from its usage and the model's prices."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from llm_gateway.settings import Pricing
from llm_gateway.types import Usage

_MILLION = Decimal(1_000_000)
_QUANTUM = Decimal("0.000000001")  # 1e-9 USD


def cost_usd(pricing: Pricing, usage: Usage) -> Decimal:
    """Cached input tokens are billed at the cached price (the input price when
    none is set); reasoning tokens are inside output tokens."""
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    cached_price = pricing.cached_input_per_mtok if pricing.cached_input_per_mtok is not None else (
        pricing.input_per_mtok
    )
    total = (
        (usage.input_tokens - cached) * pricing.input_per_mtok
        + cached * cached_price
        + usage.output_tokens * pricing.output_per_mtok
    ) / _MILLION
    return total.quantize(_QUANTUM)


def format_usd(amount: Decimal) -> str:
    """A decimal string with no exponent and no needless trailing zeros past 6 places."""
    text = format(amount.quantize(_QUANTUM), "f")
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    if len(frac) < 6:
        frac = frac.ljust(6, "0")
    return f"{whole}.{frac}"


def max_cost_usd(pricing: Pricing, prompt_tokens: int, output_tokens: int) -> Decimal:
    """The most a request can cost: every prompt token at the (uncached) input
    price and every allowed output token at the output price."""
    total = (prompt_tokens * pricing.input_per_mtok + output_tokens * pricing.output_per_mtok) / _MILLION
    return total.quantize(_QUANTUM, rounding=ROUND_CEILING)
