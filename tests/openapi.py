"""Validate gateway responses against OpenAI's own OpenAPI document: the
schemas we validate against, cut unchanged from openapi.yaml into
tests/fixtures/wire/openai/openapi-schemas.json (by
tests/fixtures/wire/extract_openapi.py; a schema not in it fails to resolve)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests import fixtures

SPEC = fixtures.WIRE / "openai" / "openapi-schemas.json"
_URI = "urn:openai-openapi"


def _nullable(node: Any) -> Any:
    """The document declares OpenAPI 3.1 but still marks many schemas with
    3.0's ``nullable: true``; turn those into JSON Schema's null type."""
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items()}
    if out.pop("nullable", False) is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        elif isinstance(kind, list):
            out["type"] = [*kind, "null"]
        else:
            return {"anyOf": [out, {"type": "null"}]}
    return out


@cache
def _registry() -> Registry[Any]:
    document = _nullable(json.loads(SPEC.read_text()))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return Registry().with_resource(_URI, resource)


@cache
def _validator(name: str) -> Draft202012Validator:
    schema = {"$ref": f"{_URI}#/components/schemas/{name}"}
    return Draft202012Validator(schema, registry=_registry())


@cache
def stream_event_schemas() -> dict[str, str]:
    """The schema of each Responses API stream event, by its ``type``."""
    document = json.loads(SPEC.read_text())["components"]["schemas"]
    names = [ref["$ref"].rsplit("/", 1)[1] for ref in document["ResponseStreamEvent"]["anyOf"]]
    return {document[n]["properties"]["type"]["enum"][0]: n for n in names}


def validate_stream_event(event: dict[str, Any]) -> None:
    """Validate one Responses API stream event against its own schema."""
    validate(event, stream_event_schemas()[event["type"]])


def validate(instance: Any, schema_name: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``instance`` fits the named schema."""
    _validator(schema_name).validate(instance)
