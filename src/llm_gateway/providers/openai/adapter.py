"""The adapter for ``openai`` and ``openai_compatible`` providers.

An OpenAI-dialect request is passed through: the client's body with only
``model`` rewritten goes up, and the upstream's bytes come back unchanged,
while usage is read for billing. Chat Completions go to
``/chat/completions``; a Responses API request to an ``openai`` deployment
goes to ``/responses`` (an ``openai_compatible`` server gets it translated
into a chat completion, as every other dialect's requests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from llm_gateway.errors import UpstreamError
from llm_gateway.providers.base import Target, passes_through
from llm_gateway.providers.http import Upstream, finish, iter_sse, load_json, transport_errors, unexpected_body
from llm_gateway.settings import ProviderSettings
from llm_gateway.types import ChatRequest, EmbeddingRequest
from llm_gateway.wire.answer import Answer, EmbeddingAnswer, Piece
from llm_gateway.wire.openai_chat import from_wire, to_wire
from llm_gateway.wire.openai_chat.encode import decode_usage
from llm_gateway.wire.openai_responses import from_wire as responses_wire

_USAGE_KEY = b'"usage"'
_NULL_USAGE = (b'"usage":null', b'"usage": null')
_FINISH_NULL = (b'"finish_reason":null', b'"finish_reason": null')


class OpenAIProvider:
    """Speaks OpenAI's Chat Completions and Embeddings APIs."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.name = settings.name
        self.kind = settings.kind
        base = settings.base_url
        query = ""
        if settings.query_params:
            from urllib.parse import urlencode

            query = "?" + urlencode(settings.query_params)
        self._chat_url = f"{base}/chat/completions{query}"
        self._embed_url = f"{base}/embeddings{query}"
        self._responses_url = f"{base}/responses{query}"
        headers = {"content-type": "application/json", **settings.headers}
        if settings.api_key:
            header = settings.auth_header.lower()
            headers[header] = f"Bearer {settings.api_key}" if header == "authorization" else settings.api_key
        self._http = Upstream(settings, headers)
        self.address = self._http.address

    async def start(self) -> None:
        await self._http.start()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, url: str, body: dict[str, Any], request_id: str, target: Target) -> tuple[bytes, Any]:
        raw = await self._http.call(url, body, request_id, target.timeouts)
        return raw, load_json(raw, self.name)

    def _mode(self, req: ChatRequest) -> str:
        """``chat`` (the client's chat body), ``responses`` (its Responses
        body) or ``translated`` (the canonical request as a chat body)."""
        if not passes_through(self.kind, req):
            return "translated"
        assert req.origin is not None
        return "responses" if req.origin.dialect == "openai.responses" else "chat"

    async def chat(self, req: ChatRequest, target: Target, request_id: str) -> Answer:
        mode = self._mode(req)
        if mode == "responses":
            raw, data = await self._call(self._responses_url, to_wire.passthrough_body(req, target.model),
                                         request_id, target)
            if not isinstance(data, dict) or not isinstance(data.get("output"), list):
                raise unexpected_body(self.name)
            return Answer.passed(raw, "openai.responses", responses_wire.usage(data.get("usage")))
        body = to_wire.passthrough_chat_body(req, target.model, force_usage=False) if mode == "chat" else (
            to_wire.chat_body(req, target.model)
        )
        raw, data = await self._call(self._chat_url, body, request_id, target)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise unexpected_body(self.name)
        if mode == "chat":
            return Answer.passed(raw, "openai.chat", decode_usage(data.get("usage")))
        return Answer.of(from_wire.chat_response(data))

    async def chat_stream(self, req: ChatRequest, target: Target, request_id: str) -> AsyncIterator[Piece]:
        mode = self._mode(req)
        if mode == "responses":
            body = to_wire.passthrough_body(req, target.model)
            resp = await self._http.open_stream(self._responses_url, body, request_id, target.timeouts)
            return self._response_events(resp)
        body = to_wire.passthrough_chat_body(req, target.model, force_usage=True) if mode == "chat" else (
            to_wire.chat_body(req, target.model)
        )
        resp = await self._http.open_stream(self._chat_url, body, request_id, target.timeouts)
        return self._events(resp, mode == "chat", req.include_usage)

    async def _events(
        self, resp: aiohttp.ClientResponse, passthrough: bool, include_usage: bool
    ) -> AsyncIterator[Piece]:
        finished = False
        done = False
        try:
            with transport_errors(self.name):
                async for event in iter_sse(resp.content):
                    data = event.data
                    if data == b"[DONE]":
                        done = True
                        break
                    if not finished and b'"finish_reason"' in data and not any(
                        n in data for n in _FINISH_NULL
                    ):
                        finished = True
                    if passthrough:
                        if _USAGE_KEY in data and not any(n in data for n in _NULL_USAGE):
                            obj = load_json(data, self.name)
                            usage = decode_usage(obj.get("usage")) if isinstance(obj, dict) else None
                            if usage is not None and isinstance(obj, dict) and not obj.get("choices"):
                                yield Piece(data if include_usage else None, "openai.chat", usage)
                                continue
                            yield Piece(data, "openai.chat", usage)
                            continue
                        yield Piece(data, "openai.chat")
                        continue
                    obj = load_json(data, self.name)
                    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
                        msg = obj["error"].get("message")
                        raise UpstreamError(f"The {self.name} provider failed mid-stream: {msg}")
                    for ev in from_wire.chunk_events(obj):
                        yield Piece.of(ev)
            if not done and not finished:
                raise UpstreamError(f"The {self.name} provider ended the stream early.")
        finally:
            finish(resp, done)

    async def _response_events(self, resp: aiohttp.ClientResponse) -> AsyncIterator[Piece]:
        """A Responses API stream's frames as they came, the usage read from
        its last event (``response.completed`` / ``.incomplete`` / ``.failed``)."""
        done = False
        try:
            with transport_errors(self.name):
                async for event in iter_sse(resp.content):
                    name = (event.event or "").encode()
                    data = event.data
                    usage = None
                    if not name:  # the type is in the data too
                        kind = responses_wire.frame_data(b"data:" + data)
                        name = str(kind.get("type", "message")).encode() if isinstance(kind, dict) else b"message"
                    if name.decode() in responses_wire.TERMINAL_EVENTS:
                        done = True
                        obj = load_json(data, self.name)
                        response = obj.get("response") if isinstance(obj, dict) else None
                        if isinstance(response, dict):
                            usage = responses_wire.usage(response.get("usage"))
                    yield Piece(b"event: " + name + b"\ndata: " + data + b"\n\n", "openai.responses", usage)
                    if done:
                        break
            if not done:
                raise UpstreamError(f"The {self.name} provider ended the stream early.")
        finally:
            finish(resp, done)

    async def embed(self, req: EmbeddingRequest, target: Target, request_id: str) -> EmbeddingAnswer:
        raw, data = await self._call(self._embed_url, to_wire.embedding_body(req, target.model), request_id, target)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise unexpected_body(self.name)
        if req.raw is not None:
            usage = data.get("usage") or {}
            return EmbeddingAnswer(decode_usage({"prompt_tokens": usage.get("prompt_tokens", 0)}), raw)
        return EmbeddingAnswer.of(from_wire.embedding_response(data))
