"""The mock provider's handling of the JSON schemas a request carries.

``check_schemas`` refuses a malformed schema (``"required": 5``,
``"properties": [1]``, nesting hundreds deep …) as a real provider does: 400,
naming the param in the client's dialect, so the mistake reaches the client
as its own and is neither retried nor held against the deployment.

The checks are hand-rolled rather than jsonschema's meta-schema check: that
one costs about a millisecond per hundred nodes, in process, on the event
loop, and recurses (a deep schema raises ``RecursionError``). These are the
meta-schema's type rules for the keywords that shape a schema, in one
iterative walk bounded in depth and in size. Unknown keywords pass, as the
meta-schema lets them; ``pattern`` is not compiled, since Python's regular
expressions are not JSON Schema's.

``example_value`` then builds a value a schema accepts, for the mock's tool
arguments and structured answers.
"""

from __future__ import annotations

from typing import Any

from llm_gateway.errors import GatewayError, upstream_status_error
from llm_gateway.types import ChatRequest

MAX_DEPTH = 32  # nesting of objects and arrays within one schema
MAX_NODES = 20_000  # object members and array items in all of a request's schemas together

_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_SUBSCHEMA = frozenset({
    "additionalProperties", "additionalItems", "contains", "not", "if", "then", "else", "propertyNames",
    "unevaluatedProperties", "unevaluatedItems", "contentSchema",
})
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_COUNTS = frozenset({
    "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties", "minContains", "maxContains",
})
_NUMBERS = frozenset({"minimum", "maximum", "multipleOf"})
_STRINGS = frozenset({
    "$ref", "$id", "$schema", "$anchor", "$dynamicRef", "$dynamicAnchor", "$comment", "title", "description",
    "format", "pattern", "contentEncoding", "contentMediaType",
})
_BOOLEANS = frozenset({"uniqueItems", "readOnly", "writeOnly", "deprecated"})


class _Malformed(Exception):
    """A schema problem, before it is told to the client as a 400."""

    def __init__(self, where: tuple[str | int, ...], problem: str) -> None:
        super().__init__(problem)
        self.where = where
        self.problem = problem


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _keyword_problem(key: str, value: Any) -> str | None:
    """What is wrong with one keyword's value that is not a sub-schema, if anything."""
    if key == "type":
        if isinstance(value, str):
            return None if value in _TYPES else f"must be one of {', '.join(sorted(_TYPES))}"
        if isinstance(value, list) and value and all(isinstance(t, str) and t in _TYPES for t in value):
            return None if len(set(value)) == len(value) else "must not repeat a type"
        return "must be a type name or a non-empty array of type names"
    if key == "required":
        if isinstance(value, list) and all(isinstance(r, str) for r in value):
            return None if len(set(value)) == len(value) else "must not repeat a name"
        return "must be an array of property names"
    if key == "enum":
        return None if isinstance(value, list) else "must be an array"
    if key in _COUNTS:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if ok else "must be a non-negative integer"
    if key in _NUMBERS:
        if not _is_number(value):
            return "must be a number"
        return "must be greater than 0" if key == "multipleOf" and value <= 0 else None
    if key in ("exclusiveMinimum", "exclusiveMaximum"):  # a boolean in draft 4
        return None if _is_number(value) or isinstance(value, bool) else "must be a number"
    if key in _STRINGS:
        return None if isinstance(value, str) else "must be a string"
    if key in _BOOLEANS:
        return None if isinstance(value, bool) else "must be a boolean"
    return None


class _Walk:
    """One request's schemas, walked without recursion; ``nodes`` counts
    object members and array items across all of them."""

    def __init__(self) -> None:
        self.nodes = 0
        # (value, where it is, its depth, whether it is a schema or plain JSON)
        self._stack: list[tuple[Any, tuple[str | int, ...], int, bool]] = []

    def check(self, schema: Any) -> None:
        stack = self._stack = [(schema, (), 1, True)]
        while stack:
            value, where, depth, is_schema = stack.pop()
            if isinstance(value, dict | list):
                self._count(value, where, depth)
            if is_schema:
                self._schema(value, where, depth)
            elif isinstance(value, dict):
                stack.extend((v, (*where, k), depth + 1, False) for k, v in value.items())
            elif isinstance(value, list):
                stack.extend((v, (*where, i), depth + 1, False) for i, v in enumerate(value))

    def _count(self, value: dict[str, Any] | list[Any], where: tuple[str | int, ...], depth: int) -> None:
        if depth > MAX_DEPTH:
            raise _Malformed(where, f"is nested more than {MAX_DEPTH} levels deep")
        self.nodes += len(value)
        if self.nodes > MAX_NODES:
            raise _Malformed(where, f"makes the request's schemas larger than {MAX_NODES} values in all")

    def _schema(self, schema: Any, where: tuple[str | int, ...], depth: int) -> None:
        if isinstance(schema, bool):
            return
        if not isinstance(schema, dict):
            raise _Malformed(where, "must be a schema (an object or a boolean)")
        stack = self._stack
        for key, value in schema.items():
            at = (*where, key)
            problem = _keyword_problem(key, value)
            if problem is not None:
                raise _Malformed(at, problem)
            if key in _SUBSCHEMA or (key == "items" and not isinstance(value, list)):
                stack.append((value, at, depth + 1, True))
            elif key in _SCHEMA_MAPS:
                if not isinstance(value, dict):
                    raise _Malformed(at, "must be an object of schemas")
                self._count(value, at, depth + 1)
                stack.extend((v, (*at, k), depth + 2, True) for k, v in value.items())
            elif key in _SCHEMA_LISTS or key == "items":  # a list of ``items``: draft 7's tuples
                if not isinstance(value, list) or (key != "items" and not value):
                    raise _Malformed(at, "must be a non-empty array of schemas")
                self._count(value, at, depth + 1)
                stack.extend((v, (*at, i), depth + 2, True) for i, v in enumerate(value))
            else:  # enum, const, default, examples, unknown keywords: plain JSON, only bounded
                stack.append((value, at, depth + 1, False))


def _where(path: tuple[str | int, ...]) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p[:40]}" for p in path).lstrip(".")
    return f"'{text[:200]}'" if text else "the schema"


# A dialect's tool schema key and answer schema param.
_SCHEMA_PARAMS = {
    "anthropic.messages": ("input_schema", "output_config.format.schema"),
    "openai.responses": ("parameters", "text.format.schema"),
}


def _params(req: ChatRequest) -> tuple[list[str], str]:
    """The client's names of its tools' schemas and its answer's schema."""
    dialect = req.origin.dialect if req.origin is not None else "openai.chat"
    if dialect != "openai.chat":  # tools are picked out of the body's: name each by its place there
        key, format_param = _SCHEMA_PARAMS[dialect]
        body_tools = req.origin.body.get("tools") if req.origin is not None else None
        by_identity = {id(t.get(key)): i for i, t in enumerate(body_tools or []) if isinstance(t, dict)}
        names = [f"tools[{by_identity.get(id(t.parameters), i)}].{key}" for i, t in enumerate(req.tools or [])]
        return names, format_param
    names = [f"tools[{i}].function.parameters" for i in range(len(req.tools or []))]
    return names, "response_format.json_schema.schema"


def check_schemas(req: ChatRequest, provider: str) -> None:
    """Refuse the request (400, ``UpstreamRejected``) when one of its schemas
    is malformed, too deep, or they are too large together."""
    walk = _Walk()
    tool_params, format_param = _params(req)
    schemas: list[tuple[str, str, Any]] = [
        (param, f"function '{tool.name[:100]}'", tool.parameters)
        for param, tool in zip(tool_params, req.tools or [], strict=True) if tool.parameters is not None
    ]
    rf = req.response_format
    if rf is not None and rf.type == "json_schema" and rf.schema is not None:
        schemas.append((format_param, "the response format", rf.schema))
    for param, owner, schema in schemas:
        try:
            walk.check(schema)
        except _Malformed as bad:
            raise _refusal(param, f"Invalid schema for {owner}: {_where(bad.where)} {bad.problem}.", provider) from None


def _refusal(param: str, message: str, provider: str) -> GatewayError:
    code = "invalid_function_parameters" if param.startswith("tools") else "invalid_json_schema"
    return upstream_status_error(400, message, code=code, param=param, provider=provider)


def example_value(schema: Any, depth: int = 0) -> Any:
    """A value ``schema`` accepts (roughly: the first enum value, one item per
    array, the required properties), from a schema ``check_schemas`` passed."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return "mock"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    props = schema.get("properties")
    if kind == "object" or isinstance(props, dict):
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        names = required if isinstance(required, list) else list(props)
        return {k: example_value(props.get(k), depth + 1) for k in names if isinstance(k, str)}
    if kind == "array":
        return [example_value(schema.get("items"), depth + 1)]
    return _SCALARS.get(kind, "mock") if isinstance(kind, str) else "mock"


_SCALARS: dict[str, Any] = {"integer": 1, "number": 1.5, "boolean": True, "null": None, "string": "mock"}
