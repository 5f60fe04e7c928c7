"""Rendering errors and JSON, and reading request bodies safely."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from llm_gateway.api.guard import BodyTooLarge, error_bytes
from llm_gateway.errors import GatewayError, InvalidRequest, NotFound, RequestTooLarge
from llm_gateway.ids import RequestIds


class JSONBytes(Response):
    media_type = "application/json"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONBytes(orjson.dumps(data), status_code=status, headers=headers)


def error_response(err: GatewayError, headers: dict[str, str] | None = None) -> Response:
    all_headers = err.response_headers()
    if headers:
        all_headers.update(headers)
    return JSONBytes(err.to_bytes(), status_code=err.status_code, headers=all_headers)


def request_id(request: Request, ids: RequestIds) -> str:
    """The client's ``x-request-id`` when it sent a sane one, else a new one."""
    rid = request.headers.get("x-request-id")
    if rid and len(rid) <= 128 and rid.isprintable():
        return rid
    return ids.new()


async def read_json(request: Request, limit: int) -> Any:
    """The body parsed as JSON; 413 past ``limit`` bytes (checked before reading
    when the client declares a length), 400 ``invalid_json`` when malformed."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"The request body exceeds the limit of {limit} bytes.")
    try:
        # The guard (api/guard.py) stops reading at the app-wide limit; this one may be lower.
        if declared is not None and declared.isdigit():
            body = await request.body()
        else:
            chunks = []
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(f"The request body exceeds the limit of {limit} bytes.")
                chunks.append(chunk)
            body = b"".join(chunks)
    except BodyTooLarge:
        raise RequestTooLarge(f"The request body exceeds the limit of {limit} bytes.") from None
    if len(body) > limit:
        raise RequestTooLarge(f"The request body exceeds the limit of {limit} bytes.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc.msg}.", code="invalid_json"
        ) from None


# Pydantic writes some bounds as Python reprs ("Decimal('1000000000')").
_REPR = re.compile(r"Decimal\('([^']*)'\)")


def _plain_message(error: Mapping[str, Any], field: str | None) -> str:
    """Pydantic's message for one error, as a client reads it: values written
    plainly, no "Value error, " prefix, an email's regular expression named
    for what it means."""
    if error.get("type") == "string_pattern_mismatch" and field == "email":
        return "must be an email address like name@example.com, without spaces or control characters."
    msg = _REPR.sub(r"\1", str(error.get("msg") or "Invalid request."))
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at this path (Starlette names only the
    first matching route's, e.g. GET without the PATCH of another route)."""
    path = request.url.path
    methods: set[str] = set()
    for route in request.app.router.routes:
        regex, taken = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and taken and regex.match(path):
            methods |= taken
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves in SPEC §4's shape; never a traceback."""

    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            err: GatewayError = NotFound(f"Unknown path: {request.method} {request.url.path}")
        elif exc.status_code == 405:
            err = InvalidRequest(
                f"Method {request.method} is not allowed on {request.url.path}.",
                code="method_not_allowed", status=405,
            )
        elif exc.status_code == 413:
            err = RequestTooLarge(str(exc.detail))
        else:
            err = InvalidRequest(str(exc.detail), status=exc.status_code, code=None)
        headers = err.response_headers() | {k.lower(): v for k, v in (exc.headers or {}).items()}
        if err.status_code == 405:
            headers["allow"] = _allowed_methods(request)
        # The body was not read to its end: close rather than parse its rest as the next request.
        if err.status_code == 413:
            headers["connection"] = "close"
        return JSONBytes(error_bytes(request.url.path, err), status_code=err.status_code, headers=headers)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            # Its loc is a character offset, not a field: the client learns where in the message instead.
            where = [p for p in first.get("loc", ()) if isinstance(p, int)]
            why = str((first.get("ctx") or {}).get("error") or "malformed JSON")
            at = f" (at character {where[0]})" if where else ""
            return error_response(InvalidRequest(
                f"We could not parse the JSON body of your request: {why}{at}.", code="invalid_json"))
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        code = "missing_field" if first.get("type") == "missing" else "invalid_value"
        msg = _plain_message(first, loc[-1] if loc else None)
        return error_response(InvalidRequest(f"{param}: {msg}" if param else msg, code=code, param=param))

    async def unexpected(request: Request, exc: Exception) -> Response:
        return error_response(GatewayError("The gateway failed to handle this request.", code="internal_error"))

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
