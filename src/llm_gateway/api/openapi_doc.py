"""The OpenAPI document at ``/openapi.json``, telling the truth about every route.

FastAPI describes what it can see: the pydantic models, a 422 for their
validation errors, and nothing else. The gateway answers differently: a
validation error is a 400 in SPEC §4's error shape (``api/responses.py``),
credentials are checked by the routes rather than declared, and the ``/v1``
routes are plain Starlette routes described in ``openai/schemas.py``. So the
generated document is post-processed here, in one place:

- every 422 becomes a 400 with the shared ``ErrorResponse`` schema;
- each operation gets the statuses it can really answer, from rules that
  hold for every route (a body can be too large, an id in the path can be
  unknown, an admin route refuses a user) plus a table of the few that are
  particular to one route;
- a bearer security scheme, applied to every route that needs a credential,
  so that Swagger UI's "Authorize" works;
- the constraints the account models check in validators (which pydantic
  cannot put into JSON Schema) written out, so that clients and fuzzers see
  what the gateway refuses.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from llm_gateway.api.openai.schemas import OPENAPI_PATHS, OPENAPI_SCHEMAS
from llm_gateway.settings import Settings

ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}

BEARER = "bearer"
X_API_KEY = "x-api-key"
SECURITY_SCHEMES: dict[str, Any] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key (`gw-…`), or a JWT: the gateway's access token from `POST /auth/login`, "
        "or, when `auth.external` is configured, your identity provider's. The master key works everywhere.",
    },
    X_API_KEY: {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "The same credential as Anthropic's SDKs send it (`/v1/messages` only).",
    },
}

# What each error status means, whatever the route (SPEC §4).
_STATUS_TEXT: dict[int, str] = {
    400: "Malformed JSON or a schema violation (`invalid_request_error`; `param` names the field)",
    401: "Missing, wrong, expired or revoked credential (`authentication_error`)",
    402: "The balance or the key's budget cannot cover the request (`insufficient_quota`, `budget_exceeded`)",
    403: "Not allowed for this caller (`permission_error`: `admin_required`, `model_not_allowed`)",
    404: "Not found",
    409: "Conflict with the current state",
    413: "The body is over `max_request_bytes` (`request_too_large`)",
    429: "Rate limited (`rate_limit_exceeded`); `Retry-After` says how many seconds to wait",
    502: "The provider failed or answered garbage, after retries and fallbacks (`upstream_error`)",
    503: "Every deployment's circuit is open, or the database or rate limiter is unreachable "
    "(`service_unavailable`)",
    504: "The provider timed out, or the request's deadline passed (`upstream_timeout`)",
}

# Routes anyone may call. /metrics joins them unless observability.metrics_token is set.
PUBLIC = frozenset({"/health", "/ready", "/auth/login", "/auth/refresh", "/auth/signup"})

# Answers a route gives beyond the rules in ``_statuses``: (method, path) → {status: why}.
_MODEL_CALL = {
    402: _STATUS_TEXT[402],
    403: "The caller may not use this model (`model_not_allowed`)",
    404: "Unknown model (`model_not_found`)",
    429: _STATUS_TEXT[429],
    502: _STATUS_TEXT[502],
    503: _STATUS_TEXT[503],
    504: _STATUS_TEXT[504],
}
_PARTICULAR: dict[tuple[str, str], dict[int, str]] = {
    ("post", "/v1/chat/completions"): _MODEL_CALL,
    ("post", "/v1/embeddings"): _MODEL_CALL,
    ("post", "/v1/messages"): _MODEL_CALL,
    ("post", "/v1/messages/count_tokens"): {
        403: _MODEL_CALL[403], 404: _MODEL_CALL[404], 502: _STATUS_TEXT[502], 504: _STATUS_TEXT[504],
    },
    ("get", "/v1/models/{model_id}"): {404: "Unknown model, or one this caller may not use (`model_not_found`)"},
    ("post", "/admin/users"): {409: "A user with this email exists, in any case (`email_taken`)"},
    ("patch", "/admin/users/{user_id}"): {409: "Another user has this email (`email_taken`)"},
    ("post", "/admin/users/{user_id}/credits"): {
        409: "The `Idempotency-Key` was used with another amount, or the adjustment would take the balance "
        "below zero",
    },
    ("post", "/me/keys"): {403: "The key names a model its maker may not use (`model_not_allowed`)"},
    ("post", "/auth/login"): {
        401: "Incorrect email or password",
        429: "Too many failed sign-ins for this email or address; `Retry-After` says when to try again",
    },
    ("post", "/auth/refresh"): {401: "The refresh token is spent, revoked or expired"},
    ("post", "/auth/signup"): {
        403: "Sign-up is disabled on this gateway (`signup_disabled`)",
        409: "A user with this email exists (`email_taken`)",
    },
    ("get", "/ready"): {503: "The database or Redis is unreachable; the body names which"},
}

# Statuses a route answers whatever its table says.
_ME_404 = "The master key belongs to no user, or the id is not one of your keys (`user_not_found`, `key_not_found`)"
_ID_404 = "No such id (`user_not_found`, `key_not_found`)"
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait, at least 1", "schema": {"type": "integer"}}}

# The 200 answers FastAPI cannot see: other media types, and replays.
_CSV = {"text/csv": {"schema": {"type": "string"}}}
_SUCCESS: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/metrics"): {"200": {"description": "Prometheus text exposition",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
    ("get", "/health"): {"200": {"description": "The process is up", "content": {"application/json": {
        "schema": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}}}}},
    ("get", "/ready"): {"200": {"description": "The database (and Redis, when configured) answer",
                                "content": {"application/json": {"schema": {"type": "object"}}}}},
}


def _error(description: str, status: int) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    if status == 429:
        response["headers"] = copy.deepcopy(_RETRY_AFTER)
    return response


def _statuses(method: str, path: str, operation: dict[str, Any], secured: bool) -> dict[int, str]:
    """Every error status this operation can answer, with why."""
    out: dict[int, str] = {}
    if operation.get("parameters") or operation.get("requestBody"):
        out[400] = _STATUS_TEXT[400]
    if secured:
        out[401] = _STATUS_TEXT[401]
        # An uncached credential is looked up in the database.
        out[503] = "The database is unreachable (`database_unavailable`)"
    if path.startswith("/admin/"):
        out[403] = "The caller is not the master key or an admin (`admin_required`)"
    if path == "/me" or path.startswith("/me/"):
        out[404] = _ME_404
    elif "{" in path:
        out[404] = _ID_404
    if operation.get("requestBody"):
        out[413] = _STATUS_TEXT[413]
    out.update(_PARTICULAR.get((method, path), {}))
    return dict(sorted(out.items()))


def _fix_operation(method: str, path: str, operation: dict[str, Any], secured: bool) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)
    responses.update(copy.deepcopy(_SUCCESS.get((method, path), {})))
    if path.endswith("/usage"):  # ?format=csv
        responses["200"].setdefault("content", {}).update(copy.deepcopy(_CSV))
    if path.endswith("/credits"):
        responses["200"] = {"description": "A replay of an earlier request's Idempotency-Key: that transaction",
                            "content": copy.deepcopy(responses["201"]["content"])}
    for status, why in _statuses(method, path, operation, secured).items():
        responses.setdefault(str(status), _error(why, status))
    if secured:
        schemes: list[dict[str, list[str]]] = [{BEARER: []}]
        if path.startswith("/v1/messages"):
            schemes.append({X_API_KEY: []})
        operation["security"] = schemes
    else:
        operation.pop("security", None)


# ---------------------------------------------------------------- request constraints

# What the account models' validators refuse, as JSON Schema (accounts.py:
# ``_email``, ``_model_name``, ``storable``): text without NUL, an email with
# one "@" and no spaces or control characters, a model name that is not blank.
_NO_NUL = "^[^\\x00]*$"
EMAIL_PATTERN = "^[^@\\s\\x00-\\x1f\\x7f-\\x9f]+@[^@\\s\\x00-\\x1f\\x7f-\\x9f]+$"
_MODEL_NAME_PATTERN = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"
_FIELD_PATTERNS: dict[str, str] = {
    "email": EMAIL_PATTERN,
    "password": _NO_NUL,
    "name": _NO_NUL,
    "note": _NO_NUL,
}
_ACCOUNT_SCHEMAS = ("NewUser", "UserChanges", "NewKey", "NewCredit", "LoginRequest", "SignupRequest")


def _strings(node: Any) -> list[dict[str, Any]]:
    """The string schemas in ``node`` (through anyOf/oneOf, e.g. ``str | None``)."""
    if not isinstance(node, dict):
        return []
    if node.get("type") == "string":
        return [node]
    return [s for key in ("anyOf", "oneOf") for branch in node.get(key, []) for s in _strings(branch)]


# Query parameters the routes check by hand (``accounts.plausible_id``,
# ``accounts.check_after``, ``billing._model_filter``, ``reports.date_range``).
_ISO_DATE = {"anyOf": [{"type": "string", "format": "date"}, {"type": "string", "maxLength": 0}],
             "description": "ISO date (UTC), inclusive; empty or absent: see the route"}
_QUERY: dict[str, dict[str, Any]] = {
    "after": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[ -~]+$",
              "description": "the last id of the previous page"},
    "user_id": {"type": "string", "maxLength": 64, "pattern": "^[ -~]*$", "description": "only this user's"},
    "key_id": {"type": "string", "maxLength": 64, "pattern": "^[ -~]*$", "description": "only this key's"},
    "model": {"type": "string", "maxLength": 200, "pattern": _NO_NUL, "description": "only this model's"},
    "from": _ISO_DATE,
    "to": _ISO_DATE,
}

# ``amount_usd``: a decimal string of at most 9 decimals (or a whole JSON
# number), within ±1e9 USD, not zero (billing.NewCredit); ``budget_usd``
# likewise but above zero (accounts.NewKey). Pydantic writes its bounds as
# strings, which no validator reads.
_AMOUNT_USD: dict[str, Any] = {
    "description": 'USD as a decimal string such as "10.00"; negative for an adjustment; not zero',
    "anyOf": [
        {"type": "string", "pattern": "^-?([0-9]{1,9}(\\.[0-9]{1,9})?|1000000000(\\.0{1,9})?)$",
         "not": {"pattern": "^-?0*(\\.0*)?$"}},
        {"type": "integer", "minimum": -1_000_000_000, "maximum": 1_000_000_000, "not": {"const": 0}},
    ],
}
_BUDGET_USD: dict[str, Any] = {
    "description": 'USD per budget_period as a decimal string such as "5.00"',
    "anyOf": [
        {"type": "string", "pattern": "^([0-9]{1,9}(\\.[0-9]{1,9})?|1000000000(\\.0{1,9})?)$",
         "not": {"pattern": "^0*(\\.0*)?$"}},
        {"type": "integer", "minimum": 1, "maximum": 1_000_000_000},
        {"type": "null"},
    ],
}


def _fix_query(path: str, operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        schema = _QUERY.get(parameter.get("name")) if parameter.get("in") == "query" else None
        if path == "/admin/keys" and parameter.get("name") == "user_id":
            continue  # any text: an id that cannot exist lists no keys
        if schema is not None:
            parameter["schema"] = copy.deepcopy(schema)


def _constrain(schemas: dict[str, Any]) -> None:
    credit = schemas.get("NewCredit", {}).get("properties", {})
    if "amount_usd" in credit:
        credit["amount_usd"] = copy.deepcopy(_AMOUNT_USD)
    key = schemas.get("NewKey", {}).get("properties", {})
    if "budget_usd" in key:
        key["budget_usd"] = copy.deepcopy(_BUDGET_USD)
    changes = schemas.get("UserChanges", {}).get("properties", {})
    for field in ("email", "role", "is_active"):  # may be left out, but not null
        branches = changes.get(field, {}).get("anyOf")
        if branches:
            changes[field] = {k: v for k, v in changes[field].items() if k != "anyOf"} | next(
                b for b in branches if b.get("type") != "null")
    for name in _ACCOUNT_SCHEMAS:
        properties: dict[str, Any] = schemas.get(name, {}).get("properties", {})
        for field, pattern in _FIELD_PATTERNS.items():
            for string in _strings(properties.get(field)):
                string.setdefault("pattern", pattern)
        models = properties.get("allowed_models")
        for branch in [models, *(models or {}).get("anyOf", [])]:
            if isinstance(branch, dict) and branch.get("type") == "array":
                for string in _strings(branch.get("items")):
                    string.setdefault("pattern", _MODEL_NAME_PATTERN)


# ---------------------------------------------------------------- the document

_UNUSED = ("HTTPValidationError", "ValidationError")
_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def build_document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The whole document: FastAPI's, the hand-written ``/v1`` paths, and the
    fixes described in this module's docstring."""
    document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    document.setdefault("paths", {}).update(copy.deepcopy(OPENAPI_PATHS))
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(copy.deepcopy(OPENAPI_SCHEMAS))
    for name in _UNUSED:
        schemas.pop(name, None)
    components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    public = PUBLIC if settings.observability.metrics_token else PUBLIC | {"/metrics"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in _METHODS:
                _fix_query(path, operation)
                _fix_operation(method, path, operation, secured=path not in public)
    _constrain(schemas)
    return document
