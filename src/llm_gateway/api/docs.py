"""``/docs`` (Swagger UI) and ``/redoc``, served whole by the gateway.

FastAPI's own pages load their scripts from a CDN, so they are blank on a
gateway without Internet access, and they start Swagger UI with an inline
script, which no strict Content-Security-Policy allows. Here the scripts and
styles come from the ``fastapi-offline`` package's copies, Swagger UI is
started by a small script of our own served as a file, and every page and
asset carries a policy that allows scripts from this origin only
(``'unsafe-inline'`` remains for styles, which both UIs set on elements).
The pages also name each script's SHA-384 (Subresource Integrity), so a
script altered between the gateway and the browser is not run.
"""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass
from functools import cache
from importlib import resources

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llm_gateway.api.responses import error_response
from llm_gateway.errors import NotFound

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"

# No inline or remote script, no plugins, no framing; fetches (the document,
# "Try it out") go to this origin only. Swagger UI draws its icons from data:
# URIs, and ReDoc runs its search in a worker made from a blob: URL.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}

# Starts Swagger UI; where the document lives is read from the page, so this
# file is the same for every gateway (and under any root_path).
_SWAGGER_INIT = b"""\
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    persistAuthorization: false,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
});
"""

_JS = "text/javascript; charset=utf-8"


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str

    @property
    def integrity(self) -> str:
        return "sha384-" + base64.b64encode(hashlib.sha384(self.body).digest()).decode()


_PACKAGED = {  # file in fastapi_offline/static → its media type
    "swagger-ui-bundle.js": _JS,
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": _JS,
    "favicon.png": "image/png",
}


@cache
def asset(name: str) -> Asset | None:
    """One of the files the pages load, read once (a few MB in all)."""
    if name == "swagger-init.js":
        return Asset(_SWAGGER_INIT, _JS)
    media_type = _PACKAGED.get(name)
    if media_type is None:
        return None
    return Asset(resources.files("fastapi_offline").joinpath("static", name).read_bytes(), media_type)


def _page(title: str, head: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n{head}</head>\n<body>\n{body}</body>\n</html>\n"
    )


def _script(root: str, name: str) -> str:
    found = asset(name)
    assert found is not None
    return f'<script src="{root}{ASSETS_URL}/{name}" integrity="{found.integrity}"></script>\n'


def _icon(root: str) -> str:
    return f'<link rel="icon" type="image/png" href="{root}{ASSETS_URL}/favicon.png">\n'


def _html(text: str) -> Response:
    return Response(text, media_type="text/html; charset=utf-8",
                    headers=SECURITY_HEADERS | {"cache-control": "no-cache"})


def _root(request: Request) -> str:
    return html.escape(str(request.scope.get("root_path", "")).rstrip("/"), quote=True)


def install_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and their assets to ``app`` (created with
    ``docs_url=None, redoc_url=None``). Not part of the OpenAPI document."""
    openapi_url = app.openapi_url or "/openapi.json"

    async def swagger_ui(request: Request) -> Response:
        root = _root(request)
        head = f'<link rel="stylesheet" href="{root}{ASSETS_URL}/swagger-ui.css">\n{_icon(root)}'
        body = (f'<div id="swagger-ui" data-openapi-url="{root}{html.escape(openapi_url)}"></div>\n'
                + _script(root, "swagger-ui-bundle.js") + _script(root, "swagger-init.js"))
        return _html(_page(f"{app.title} - Swagger UI", head, body))

    async def redoc(request: Request) -> Response:
        root = _root(request)
        # The standalone bundle renders every <redoc> element by itself: no inline script.
        body = (f'<redoc spec-url="{root}{html.escape(openapi_url)}"></redoc>\n'
                + _script(root, "redoc.standalone.js"))
        return _html(_page(f"{app.title} - ReDoc", _icon(root), body))

    async def assets(request: Request) -> Response:
        found = asset(request.path_params["name"])
        if found is None:
            return error_response(NotFound(f"Unknown path: {request.method} {request.url.path}"), SECURITY_HEADERS)
        # The files change only with the installed package: a day's caching, then revalidation by ETag.
        etag = f'"{found.integrity[7:27]}"'
        headers = SECURITY_HEADERS | {"cache-control": "public, max-age=86400", "etag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(found.body, media_type=found.media_type, headers=headers)

    app.router.routes.extend([
        Route(DOCS_URL, swagger_ui, methods=["GET"], include_in_schema=False),
        Route(REDOC_URL, redoc, methods=["GET"], include_in_schema=False),
        Route(ASSETS_URL + "/{name}", assets, methods=["GET"], include_in_schema=False),
    ])
