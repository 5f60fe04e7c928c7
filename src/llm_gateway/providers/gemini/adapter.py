"""The adapter for ``gemini`` providers: thin I/O around the pure translators.

Calls ``{base}/models/{model}:generateContent``,
``:streamGenerateContent?alt=sse`` and ``:batchEmbedContents`` with the key
in ``x-goog-api-key``. Errors are mapped once, by ``gemini_errors.error``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from llm_gateway.providers.base import Target
from llm_gateway.providers.gemini import errors as gemini_errors
from llm_gateway.providers.gemini.images import fetch_images
from llm_gateway.providers.http import Upstream, finish, iter_sse, load_json, transport_errors, unexpected_body
from llm_gateway.settings import ProviderSettings
from llm_gateway.types import ChatRequest, EmbeddingRequest
from llm_gateway.wire.answer import Answer, EmbeddingAnswer, Piece
from llm_gateway.wire.gemini import from_wire, to_wire
from llm_gateway.wire.gemini.stream import StreamDecoder

IMAGE_TIMEOUT_S = 30.0


class GeminiProvider:
    """Speaks Google's Gemini API (generateContent and batchEmbedContents)."""

    def __init__(self, settings: ProviderSettings) -> None:
        # The gateway downloads http(s) images for Gemini; URLs on private,
        # loopback or link-local hosts are refused unless the operator allows them.
        self.allow_private_image_hosts = settings.fetch_private_image_urls
        self.name = settings.name
        self.kind = settings.kind
        self._base = settings.base_url
        headers = {"content-type": "application/json", **settings.headers}
        if settings.api_key:
            headers["x-goog-api-key"] = settings.api_key
        self._http = Upstream(settings, headers, gemini_errors.error)
        self.address = self._http.address
        self._image_timeout = aiohttp.ClientTimeout(
            total=min(settings.timeout_s, IMAGE_TIMEOUT_S), sock_connect=settings.connect_timeout_s
        )

    async def start(self) -> None:
        await self._http.start()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _url(self, model: str, method: str) -> str:
        return f"{self._base}/{to_wire.model_path(model)}:{method}"

    async def _call(self, url: str, body: dict[str, Any], request_id: str, target: Target) -> Any:
        return load_json(await self._http.call(url, body, request_id, target.timeouts), self.name)

    async def _chat_body(self, req: ChatRequest) -> dict[str, Any]:
        wanted = to_wire.remote_images(req)
        images: dict[str, to_wire.InlineImage] = {}
        if wanted:
            images = await fetch_images(
                self._http.session, wanted, timeout=self._image_timeout,
                allow_private=self.allow_private_image_hosts,
            )
        return to_wire.chat_body(req, images)

    async def chat(self, req: ChatRequest, target: Target, request_id: str) -> Answer:
        body = await self._chat_body(req)
        data = await self._call(self._url(target.model, "generateContent"), body, request_id, target)
        return Answer.of(from_wire.chat_response(data, target.model))

    async def chat_stream(
        self, req: ChatRequest, target: Target, request_id: str
    ) -> AsyncIterator[Piece]:
        body = await self._chat_body(req)
        url = self._url(target.model, "streamGenerateContent") + "?alt=sse"
        resp = await self._http.open_stream(url, body, request_id, target.timeouts)
        return self._events(resp)

    async def _events(self, resp: aiohttp.ClientResponse) -> AsyncIterator[Piece]:
        decoder = StreamDecoder(self.name)
        clean = False
        try:
            with transport_errors(self.name):
                async for event in iter_sse(resp.content):
                    data = load_json(event.data, self.name)
                    if isinstance(data, dict) and isinstance(data.get("error"), dict):
                        code = data["error"].get("code")
                        status = code if isinstance(code, int) and code >= 400 else 500
                        raise gemini_errors.error(status, event.data, {}, self.name)
                    for ev in decoder.feed(data):
                        yield Piece.of(ev)
                clean = True
            for ev in decoder.close():
                yield Piece.of(ev)
        finally:
            finish(resp, clean)

    async def embed(self, req: EmbeddingRequest, target: Target, request_id: str) -> EmbeddingAnswer:
        body = to_wire.embedding_body(req, target.model)
        data = await self._call(self._url(target.model, "batchEmbedContents"), body, request_id, target)
        if not isinstance(data, dict):
            raise unexpected_body(self.name)
        return EmbeddingAnswer.of(from_wire.embedding_response(data, req, target.model))
