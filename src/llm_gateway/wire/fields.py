"""Validating a JSON request body's fields, with errors that name the field
in OpenAI's style (``messages[1].content``) so a client sees exactly what to
fix. Shared by the OpenAI and Anthropic dialects."""

from __future__ import annotations

from typing import Any, NoReturn

from llm_gateway.errors import InvalidRequest


def missing(param: str) -> NoReturn:
    raise InvalidRequest(f"Missing required parameter: '{param}'.", code="missing_field", param=param)


def bad_type(param: str, expected: str) -> NoReturn:
    raise InvalidRequest(
        f"Invalid type for '{param}': expected {expected}.", code="invalid_type", param=param
    )


def bad_value(param: str, why: str) -> NoReturn:
    raise InvalidRequest(f"Invalid value for '{param}': {why}", code="invalid_value", param=param)


def opt_number(body: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        bad_type(key, "a number")
    if not lo <= v <= hi:
        bad_value(key, f"must be between {lo:g} and {hi:g}.")
    return float(v)


# No request needs more: an upper bound on every token count a client sends,
# so that no arithmetic on it (reservations, limits) can leave the 64-bit range.
MAX_TOKENS = 10_000_000


def opt_int(body: dict[str, Any], key: str, lo: int, hi: int = MAX_TOKENS, param: str | None = None) -> int | None:
    """An optional integer within ``[lo, hi]`` (every number a client sends has a bound)."""
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        bad_type(param or key, "an integer")
    if v < lo:
        bad_value(param or key, f"must be at least {lo}.")
    if v > hi:
        bad_value(param or key, f"must be at most {hi}.")
    return v


def opt_bool(body: dict[str, Any], key: str) -> bool | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, bool):
        bad_type(key, "a boolean")
    return v


def opt_str(body: dict[str, Any], key: str, param: str | None = None) -> str | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        bad_type(param or key, "a string")
    return v


def req_object(value: Any, param: str) -> dict[str, Any]:
    """A JSON object, else 400 naming ``param``."""
    if not isinstance(value, dict):
        bad_type(param, "an object")
    return value


def req_str(obj: dict[str, Any], key: str, param: str) -> str:
    """The required string ``obj[key]``, else 400 naming ``param.key``."""
    value = obj.get(key)
    if value is None:
        missing(f"{param}.{key}")
    if not isinstance(value, str):
        bad_type(f"{param}.{key}", "a string")
    return value


def nonempty_list(value: Any, param: str) -> list[Any]:
    """A required, non-empty JSON array."""
    if value is None:
        missing(param)
    if not isinstance(value, list):
        bad_type(param, "an array")
    if not value:
        bad_value(param, "expected a non-empty array.")
    return value
