"""The adapter for ``openai`` and ``openai_compatible`` providers.

An OpenAI-dialect request is passed through: the client's body with only
``model`` rewritten goes up, and the upstream's bytes come back unchanged,
while usage is read for billing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from llm_gateway.api.openai.encode import decode_usage
from llm_gateway.errors import UpstreamError
from llm_gateway.providers.base import (
    ChatResult,
    ChunkOrEvent,
    EmbeddingResult,
    RawChat,
    RawChunk,
    RawEmbedding,
    Target,
)
from llm_gateway.providers.http import (
    error_from_response,
    iter_sse,
    load_json,
    new_session,
    timeouts,
    transport_errors,
)
from llm_gateway.providers.openai import from_wire, to_wire
from llm_gateway.settings import ProviderSettings
from llm_gateway.types import ChatRequest, EmbeddingRequest

_USAGE_KEY = b'"usage"'
_NULL_USAGE = (b'"usage":null', b'"usage": null')
_FINISH_NULL = (b'"finish_reason":null', b'"finish_reason": null')


class OpenAIProvider:
    """Speaks OpenAI's Chat Completions and Embeddings APIs."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.name = settings.name
        self.kind = settings.kind
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None
        base = settings.base_url
        query = ""
        if settings.query_params:
            from urllib.parse import urlencode

            query = "?" + urlencode(settings.query_params)
        self._chat_url = f"{base}/chat/completions{query}"
        self._embed_url = f"{base}/embeddings{query}"
        headers = {"content-type": "application/json", **settings.headers}
        if settings.api_key:
            header = settings.auth_header.lower()
            headers[header] = f"Bearer {settings.api_key}" if header == "authorization" else settings.api_key
        self._headers = headers
        self._timeout = timeouts(settings, stream=False)
        self._stream_timeout = timeouts(settings, stream=True)

    async def start(self) -> None:
        self._session = new_session(self._settings)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _post(self, url: str, body: dict[str, Any], request_id: str, stream: bool) -> Any:
        assert self._session is not None, "provider not started"
        headers = self._headers | {"x-request-id": request_id}
        return self._session.post(
            url, data=orjson.dumps(body), headers=headers,
            timeout=self._stream_timeout if stream else self._timeout,
        )

    async def _call(self, url: str, body: dict[str, Any], request_id: str) -> tuple[bytes, Any]:
        with transport_errors(self.name):
            async with self._post(url, body, request_id, stream=False) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise error_from_response(resp.status, raw, resp.headers, self.name)
        return raw, load_json(raw, self.name)

    async def chat(self, req: ChatRequest, target: Target, request_id: str) -> ChatResult:
        passthrough = req.raw is not None
        body = to_wire.passthrough_chat_body(req, target.model, force_usage=False) if passthrough else (
            to_wire.chat_body(req, target.model)
        )
        raw, data = await self._call(self._chat_url, body, request_id)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise UpstreamError(f"The {self.name} provider answered with an unexpected body.")
        if passthrough:
            return RawChat(raw, decode_usage(data.get("usage")))
        return from_wire.chat_response(data)

    async def chat_stream(self, req: ChatRequest, target: Target, request_id: str) -> AsyncIterator[ChunkOrEvent]:
        passthrough = req.raw is not None
        body = to_wire.passthrough_chat_body(req, target.model, force_usage=True) if passthrough else (
            to_wire.chat_body(req, target.model)
        )
        with transport_errors(self.name):
            ctx = self._post(self._chat_url, body, request_id, stream=True)
            resp = await ctx.__aenter__()
            if resp.status >= 400:
                try:
                    raw = await resp.read()
                finally:
                    resp.release()
                raise error_from_response(resp.status, raw, resp.headers, self.name)
        return self._events(resp, passthrough, req.include_usage)

    async def _events(
        self, resp: aiohttp.ClientResponse, passthrough: bool, include_usage: bool
    ) -> AsyncIterator[ChunkOrEvent]:
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
                                yield RawChunk(data if include_usage else None, usage)
                                continue
                            yield RawChunk(data, usage)
                            continue
                        yield RawChunk(data)
                        continue
                    obj = load_json(data, self.name)
                    if isinstance(obj, dict) and isinstance(obj.get("error"), dict):
                        msg = obj["error"].get("message")
                        raise UpstreamError(f"The {self.name} provider failed mid-stream: {msg}")
                    for ev in from_wire.chunk_events(obj):
                        yield ev
            if not done and not finished:
                raise UpstreamError(f"The {self.name} provider ended the stream early.")
        finally:
            if done:
                resp.release()
            else:
                resp.close()

    async def embed(self, req: EmbeddingRequest, target: Target, request_id: str) -> EmbeddingResult:
        raw, data = await self._call(self._embed_url, to_wire.embedding_body(req, target.model), request_id)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise UpstreamError(f"The {self.name} provider answered with an unexpected body.")
        if req.raw is not None:
            usage = data.get("usage") or {}
            return RawEmbedding(raw, decode_usage({"prompt_tokens": usage.get("prompt_tokens", 0)}))
        return from_wire.embedding_response(data)
