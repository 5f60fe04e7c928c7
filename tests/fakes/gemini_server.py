"""A fake Gemini API upstream speaking the real wire format (see the
recordings in tests/fixtures/wire/gemini/), for adapter and end-to-end tests.

``create_app(api_key=...)`` returns a Starlette app; ``app.state.requests``
records every request as ``{"method", "path", "query", "headers", "body"}``.

Steering, from the last user turn's text:

- ``fake-error:<status>`` (429, 500, 503, 400) answers that status with the
  real error body; ``fake-error:midstream`` ends a stream after its first
  event without a finishReason.
- With tools (mode not NONE) and no functionResponse in the last user turn,
  it calls the first (or first allowed) function with args built from its
  schema; after a functionResponse it answers text quoting the response.
- Otherwise it answers ``Hello from fake Gemini: <last user text>`` (JSON when
  ``responseMimeType`` is application/json), cut to ``maxOutputTokens`` words.
- A system instruction containing ``thinking`` adds a ``thought: true`` part
  and ``thoughtsTokenCount``; containing ``cached`` adds
  ``cachedContentTokenCount``.
- A model whose name starts with ``missing`` answers the real 404; a model
  named ``gemini-3…`` refuses a functionCall without ``thoughtSignature`` in
  the current turn, as the real API does.
- A wrong or missing ``x-goog-api-key`` answers the real 400 API_KEY_INVALID.

GET ``/images/pixel.png`` serves a small PNG, ``/images/page.html`` a
non-image, ``/images/redirect`` a redirect to the PNG (for image fetching).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import struct
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
SIGNATURE = base64.b64encode(b"fake-thought-signature+/" * 4).decode()
EMBEDDING_DIMENSIONS = 8

API_KEY_INVALID = {"error": {
    "code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
    "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
         "message": "API key not valid. Please pass a valid API key."},
        {"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": "Invalid API key: key1234"},
    ],
}}
ERRORS: dict[int, dict[str, Any]] = {
    400: {"error": {"code": 400, "message": "Request contains an invalid argument.",
                    "status": "INVALID_ARGUMENT"}},
    429: {"error": {
        "code": 429,
        "message": "You exceeded your current quota, please check your plan and billing details. "
                   "For more information on this error, head to: "
                   "https://ai.google.dev/gemini-api/docs/rate-limits.\nPlease retry in 53.160623668s.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "53s"},
        ],
    }},
    500: {"error": {"code": 500, "message": "An internal error has occurred. Please retry or report in "
                    "https://developers.generativeai.google/guide/troubleshooting", "status": "INTERNAL"}},
    503: {"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                    "status": "UNAVAILABLE"}},
}
_TOP_LEVEL = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings"}


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json; charset=UTF-8")


def _not_found(model: str, method: str) -> Response:
    message = (f"models/{model} is not found for API version v1beta, or is not supported for {method}. "
               "Call ListModels to see the list of available models and their supported methods.")
    return _json({"error": {"code": 404, "message": message, "status": "NOT_FOUND"}}, 404)


def _invalid(message: str) -> Response:
    return _json({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}, 400)


def schema_value(schema: Any) -> Any:
    """A value matching a JSON schema (or Gemini's upper-case OpenAPI subset)."""
    if not isinstance(schema, dict):
        return "fake"
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "")).lower()
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: schema_value(props.get(k)) for k in schema.get("required") or list(props)}
    if kind == "array":
        return [schema_value(schema.get("items"))]
    return {"integer": 1, "number": 1.5, "boolean": True}.get(kind, "fake")


def embedding(text: str, dims: int) -> list[float]:
    seed = hashlib.sha256(text.encode()).digest()
    raw = (seed * (dims * 4 // len(seed) + 1))[: dims * 4]
    values = [(v % 2000) / 1000 - 1 for v in struct.unpack(f"<{dims}I", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


class _Answer:
    """What the fake answers one generateContent request with."""

    def __init__(self, body: dict[str, Any], model: str) -> None:
        contents = body.get("contents") or []
        last = contents[-1] if contents else {"parts": []}
        parts = last.get("parts") or []
        self.user_text = " ".join(p["text"] for p in parts if isinstance(p.get("text"), str))
        responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
        system = " ".join(p.get("text", "") for p in (body.get("systemInstruction") or {}).get("parts", []))
        config = body.get("generationConfig") or {}
        calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        # The API takes the proto's field names in snake_case too (LiteLLM sends them so).
        decls = [d for t in body.get("tools") or []
                 for d in t.get("functionDeclarations") or t.get("function_declarations") or []]
        self.error = self.user_text.split("fake-error:", 1)[1].split()[0] if "fake-error:" in self.user_text else None
        self.thinking = "thinking" in system
        self.cached = "cached" in system
        self.candidates = int(config.get("candidateCount") or 1)
        self.model = model
        self.call: dict[str, Any] | None = None
        self.finish = "STOP"
        if decls and not responses and calling.get("mode", "AUTO") != "NONE":
            allowed = calling.get("allowedFunctionNames") or [d["name"] for d in decls]
            decl = next(d for d in decls if d["name"] in allowed)
            schema = decl.get("parametersJsonSchema") or decl.get("parameters") or {"type": "object"}
            self.call = {"name": decl["name"], "args": schema_value(schema)}
            self.words: list[str] = []
            return
        if responses:
            text = "Fake Gemini got the tool result: " + orjson.dumps(responses[-1]["response"]).decode()
        elif config.get("responseMimeType") == "application/json":
            schema = config.get("responseJsonSchema") or config.get("responseSchema")
            text = orjson.dumps(schema_value(schema) if schema else {"echo": self.user_text}).decode()
        else:
            text = f"Hello from fake Gemini: {self.user_text}"
        self.words = [w + " " for w in text.split(" ")]
        self.words[-1] = self.words[-1][:-1]
        limit = config.get("maxOutputTokens")
        if isinstance(limit, int) and len(self.words) > limit:
            self.words, self.finish = self.words[:limit], "MAX_TOKENS"

    def usage(self, words: int, prompt: int) -> dict[str, Any]:
        output = words if self.call is None else 5
        meta: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": output * self.candidates}
        if self.thinking:
            meta["thoughtsTokenCount"] = 7
        if self.cached:
            meta["cachedContentTokenCount"] = 4
        meta["totalTokenCount"] = prompt + meta["candidatesTokenCount"] + meta.get("thoughtsTokenCount", 0)
        return meta

    def response(self, parts: list[dict[str, Any]], finish: bool, words: int, prompt: int) -> dict[str, Any]:
        candidates = []
        for i in range(self.candidates):
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": i}
            if finish:
                candidate["finishReason"] = self.finish
            candidates.append(candidate)
        return {"candidates": candidates, "usageMetadata": self.usage(words, prompt),
                "modelVersion": self.model, "responseId": "fakeGeminiResponse01"}

    def thought_part(self) -> dict[str, Any]:
        return {"text": "**Thinking**\n\nThe user wants an answer.", "thought": True}

    def call_part(self) -> dict[str, Any]:
        assert self.call is not None
        return {"functionCall": self.call, "thoughtSignature": SIGNATURE}


def _missing_signature(body: dict[str, Any]) -> bool:
    """Gemini 3's rule: in the current turn (after the last user text), each
    model turn's first functionCall needs a thoughtSignature."""
    contents = body.get("contents") or []
    start = 0
    for i, content in enumerate(contents):
        if content.get("role") == "user" and any("text" in p for p in content.get("parts") or []):
            start = i
    for content in contents[start:]:
        calls = [p for p in content.get("parts") or [] if "functionCall" in p]
        if content.get("role") == "model" and calls and not calls[0].get("thoughtSignature"):
            return True
    return False


def _validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    unknown = set(body) - _TOP_LEVEL
    if unknown:
        return f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0]}": Cannot find field.'
    contents = body.get("contents")
    if not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for content in contents:
        if content.get("role") not in ("user", "model"):
            return "Please use a valid role: user, model."
        if not content.get("parts"):
            return "* GenerateContentRequest.contents.parts: contents.parts must not be empty."
    return None


def create_app(api_key: str = "test-gemini-key") -> Starlette:
    requests: list[dict[str, Any]] = []

    async def models(request: Request) -> Response:
        raw = await request.body()
        body = orjson.loads(raw) if raw else None
        requests.append({"method": request.method, "path": request.url.path, "query": dict(request.query_params),
                         "headers": dict(request.headers), "body": body})
        model, _, method = request.path_params["spec"].rpartition(":")
        if (request.headers.get("x-goog-api-key") or request.query_params.get("key")) != api_key:
            return _json(API_KEY_INVALID, 400)
        if model.startswith("missing"):
            return _not_found(model, method)
        if method in ("batchEmbedContents", "embedContent"):
            return _embed(body, model, method)
        if method not in ("generateContent", "streamGenerateContent"):
            return _not_found(model, method)
        problem = _validate(body)
        if problem:
            return _invalid(problem)
        if model.startswith("gemini-3") and _missing_signature(body):
            return _invalid("Function call is missing a thought_signature in functionCall parts.")
        answer = _Answer(body, model)
        if answer.error and answer.error.isdigit():
            return _json(ERRORS.get(int(answer.error), ERRORS[500]), int(answer.error))
        prompt = max(1, len(raw) // 40)
        if method == "generateContent":
            parts = [answer.thought_part()] if answer.thinking else []
            parts += [answer.call_part()] if answer.call else [{"text": "".join(answer.words)}]
            return _json(answer.response(parts, True, len(answer.words), prompt))
        if request.query_params.get("alt") != "sse":
            return _invalid("This fake only streams with alt=sse.")
        return StreamingResponse(_stream(answer, prompt), media_type="text/event-stream",
                                 headers={"content-disposition": "attachment"})

    async def _stream(answer: _Answer, prompt: int) -> AsyncIterator[bytes]:
        events: list[dict[str, Any]] = []
        if answer.thinking:
            events.append(answer.response([answer.thought_part()], False, 0, prompt))
        if answer.call:
            events.append(answer.response([answer.call_part()], False, 0, prompt))
            events.append(answer.response([{"text": ""}], True, 0, prompt))
        else:
            for n, word in enumerate(answer.words, 1):
                events.append(answer.response([{"text": word}], n == len(answer.words), n, prompt))
        for n, event in enumerate(events):
            if n == 1 and answer.error == "midstream":
                return
            if n == 1 and answer.error == "stream-error":
                yield b"data: " + orjson.dumps(ERRORS[503]) + b"\r\n\r\n"
                return
            yield b"data: " + orjson.dumps(event) + b"\r\n\r\n"
            await asyncio.sleep(0)

    def _embed(body: Any, model: str, method: str) -> Response:
        items = body.get("requests") if method == "batchEmbedContents" else [dict(body, model=f"models/{model}")]
        out = []
        for item in items or []:
            if item.get("model") != f"models/{model}":
                return _invalid(f"Model {item.get('model')} in request does not match models/{model}.")
            text = " ".join(p.get("text", "") for p in item["content"]["parts"])
            out.append({"values": embedding(text, int(item.get("outputDimensionality") or EMBEDDING_DIMENSIONS))})
        if method == "embedContent":
            return _json({"embedding": out[0]})
        return _json({"embeddings": out})

    async def image(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "pixel.png":
            return Response(PNG, media_type="image/png")
        if name == "page.html":
            return Response(b"<html></html>", media_type="text/html")
        if name == "redirect":
            return RedirectResponse("/images/pixel.png", 302)
        return Response(b"not found", 404)

    app = Starlette(routes=[
        Route("/v1beta/models/{spec}", models, methods=["POST"]),
        Route("/images/{name}", image, methods=["GET"]),
    ])
    app.state.requests = requests
    return app
