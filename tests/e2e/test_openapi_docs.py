"""/docs and /redoc work without Internet access and under a strict
Content-Security-Policy; /openapi.json says how to authenticate and what each
route really answers."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import httpx
import pytest

from tests.conftest import Stack

SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
PAGES = ["/docs", "/redoc"]


def _get(stack: Stack, path: str) -> httpx.Response:
    return httpx.get(stack.url + path, timeout=10)


def _assert_secure(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    csp = response.headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["script-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["default-src"] == ["'none'"]


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    response = _get(stack, "/openapi.json")
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, item in document["paths"].items() for method, op in item.items()]


@pytest.mark.parametrize("page", PAGES)
def test_docs_pages_load_only_local_assets(stack: Stack, page: str) -> None:
    response = _get(stack, page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    _assert_secure(response)
    text = response.text
    assert "https://" not in text and "http://" not in text
    assert "<script>" not in text  # no inline script: every <script> has a src
    sources = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', text)
    assert sources, "the page loads no assets"
    for source in sources:
        assert source.startswith("/docs/assets/"), source


@pytest.mark.parametrize("page", PAGES)
def test_docs_assets_answer_with_their_content_type_and_integrity(stack: Stack, page: str) -> None:
    text = _get(stack, page).text
    tags = re.findall(r'<script src="([^"]+)" integrity="([^"]+)"', text)
    links = re.findall(r'<link[^>]*href="([^"]+)"', text)
    assert tags and links
    for source, integrity in tags:
        response = _get(stack, source)
        assert response.status_code == 200, source
        assert response.headers["content-type"].startswith("text/javascript")
        _assert_secure(response)
        digest = base64.b64encode(hashlib.sha384(response.content).digest()).decode()
        assert integrity == f"sha384-{digest}"
    for href in links:
        response = _get(stack, href)
        assert response.status_code == 200, href
        expected = "text/css" if href.endswith(".css") else "image/png"
        assert response.headers["content-type"].startswith(expected)
        _assert_secure(response)


def test_swagger_ui_is_started_by_a_local_script_naming_the_document(stack: Stack) -> None:
    page = _get(stack, "/docs").text
    assert 'data-openapi-url="/openapi.json"' in page
    init = _get(stack, "/docs/assets/swagger-init.js")
    assert init.status_code == 200
    assert "SwaggerUIBundle(" in init.text and "openapiUrl" in init.text


def test_unknown_asset_is_a_404_in_the_error_shape(stack: Stack) -> None:
    response = _get(stack, "/docs/assets/..%2F..%2Fsettings.py")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_document_declares_bearer_scheme_on_routes_that_need_a_credential(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    assert "gw-" in schemes["bearer"]["description"] and "JWT" in schemes["bearer"]["description"]
    paths = document["paths"]
    assert {"bearer": []} in paths["/v1/chat/completions"]["post"]["security"]
    assert {"bearer": []} in paths["/admin/users"]["post"]["security"]
    assert {"bearer": []} in paths["/me"]["get"]["security"]
    for public in ("/health", "/ready", "/metrics"):
        assert "security" not in paths[public]["get"], public
    for public in ("/auth/login", "/auth/refresh"):
        assert "security" not in paths[public]["post"], public


def test_no_route_documents_422_and_errors_use_the_error_schema(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert len(operations) > 20
    for method, path, op in operations:
        responses = op["responses"]
        assert "422" not in responses, (method, path)
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_each_route_lists_the_statuses_it_answers(document: dict[str, Any]) -> None:
    paths = document["paths"]

    def statuses(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert {"200", "400", "401", "402", "403", "404", "413", "429", "502", "503", "504"} <= statuses(
        "/v1/chat/completions", "post")
    assert {"201", "400", "401", "403", "409", "413"} <= statuses("/admin/users", "post")
    assert {"200", "401", "403", "404"} <= statuses("/admin/users/{user_id}", "get")
    assert {"200", "201", "409"} <= statuses("/admin/users/{user_id}/credits", "post")
    assert {"200", "400", "401", "429"} <= statuses("/auth/login", "post")
    assert {"401", "404"} <= statuses("/me", "get")
    assert "text/csv" in paths["/admin/usage"]["get"]["responses"]["200"]["content"]
    assert statuses("/health", "get") == {"200"}
    assert "429" in statuses("/v1/embeddings", "post")
    assert "retry-after" in {h.lower() for h in paths["/v1/embeddings"]["post"]["responses"]["429"]["headers"]}


def test_account_inputs_show_the_constraints_the_gateway_checks(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    email = schemas["NewUser"]["properties"]["email"]
    assert email.get("minLength", 0) >= 3 and "@" in email["pattern"]
    assert schemas["NewKey"]["properties"]["name"]["minLength"] == 1
    assert schemas["CreateChatCompletionRequest"]["properties"]["model"]["minLength"] == 1


def test_protected_metrics_are_documented_as_needing_the_token(tmp_path: Any) -> None:
    from llm_gateway.app import create_app
    from llm_gateway.settings import load_settings

    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"database_url: sqlite+aiosqlite:///{tmp_path}/gw.db\n"
        "master_key: gw-docs-test-master-key-0123456789abcdefghij\n"
        "observability: {metrics_token: metrics-secret}\n"
    )
    app = create_app(load_settings(config, env={}))
    metrics = app.openapi()["paths"]["/metrics"]["get"]
    assert metrics["security"] == [{"bearer": []}]
    assert "401" in metrics["responses"]
