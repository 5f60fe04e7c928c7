"""The adapter for ``litellm`` providers: LiteLLM's SDK called in process, on
the event loop, with the deployment's time limits; its exceptions mapped
once, here (``errors.map_exception``).

Limits are kept the way ``http.Upstream`` keeps them for native kinds: a
plain answer within the attempt's total; a stream's first chunk within the
first-byte limit, each later one within the idle limit, the total and the
request's deadline. LiteLLM's own timeout gets the total and the connect
limit. A stream closed early (a client that went away, a limit passed)
closes LiteLLM's stream, and with it the upstream connection.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from llm_gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from llm_gateway.providers import causes
from llm_gateway.providers.base import REQUEST_DEADLINE, Target, Timeouts
from llm_gateway.providers.gemini.images import fetch_images
from llm_gateway.providers.http import Limits, limits, new_session
from llm_gateway.providers.litellm import from_wire, sdk, to_wire
from llm_gateway.providers.litellm.errors import map_exception
from llm_gateway.settings import ProviderSettings
from llm_gateway.types import ChatRequest, EmbeddingRequest
from llm_gateway.wire.answer import Answer, EmbeddingAnswer, Piece
from llm_gateway.wire.gemini.to_wire import remote_images

IMAGE_TIMEOUT_S = 30.0


class LiteLLMProvider:
    """Any provider LiteLLM's SDK speaks; ``target.model`` is a LiteLLM model string."""

    def __init__(self, settings: ProviderSettings) -> None:
        self.name = settings.name
        self.kind = settings.kind
        self._litellm: Any = sdk.load(settings.name)
        self._settings = settings
        self.address = causes.address(settings.api_base) if settings.api_base else ""
        self._limits = limits(settings)
        self._image_timeout = aiohttp.ClientTimeout(
            total=min(settings.timeout_s, IMAGE_TIMEOUT_S), sock_connect=settings.connect_timeout_s)
        self._images: aiohttp.ClientSession | None = None  # downloads clients' image URLs

    async def start(self) -> None:
        self._images = new_session(self._settings)

    async def aclose(self) -> None:
        if self._images is not None:
            await self._images.close()

    def _limits_for(self, override: Timeouts | None) -> Limits:
        return self._limits if override is None else limits(self._settings, override)

    def _call_kwargs(self, request_id: str, lim: Limits) -> dict[str, Any]:
        import httpx  # (a LiteLLM dependency: loaded with it)

        kwargs = to_wire.connection(self._settings, request_id)
        kwargs["timeout"] = httpx.Timeout(lim.total, connect=lim.connect)
        return kwargs

    async def _images_of(self, req: ChatRequest) -> dict[str, str]:
        wanted = remote_images(req)
        if not wanted:
            return {}
        assert self._images is not None, "provider not started"
        got = await fetch_images(self._images, wanted, timeout=self._image_timeout,
                                 allow_private=self._settings.fetch_private_image_urls)
        return {url: f"data:{image.mime_type};base64,{image.data}" for url, image in got.items()}

    async def _timed(self, call: Any, lim: Limits, phase: str, within: float) -> Any:
        """Await one LiteLLM call within ``within`` seconds, its errors mapped."""
        try:
            async with asyncio.timeout(within):
                return await call
        except TimeoutError:
            raise UpstreamTimeout(f"The {self.name} provider timed out.", cause=causes.timed_out(phase)) from None
        except (GatewayError, StopAsyncIteration):
            raise
        except Exception as exc:
            raise map_exception(exc, self.name) from None

    async def chat(self, req: ChatRequest, target: Target, request_id: str) -> Answer:
        lim = self._limits_for(target.timeouts)
        kwargs = to_wire.chat_kwargs(req, target, await self._images_of(req)) | self._call_kwargs(request_id, lim)
        kwargs.pop("stream", None)
        answer = await self._timed(self._litellm.acompletion(**kwargs), lim, "total", lim.total)
        return Answer.of(from_wire.chat_response(answer))

    async def chat_stream(self, req: ChatRequest, target: Target, request_id: str) -> AsyncIterator[Piece]:
        lim = self._limits_for(target.timeouts)
        kwargs = to_wire.chat_kwargs(req, target, await self._images_of(req)) | self._call_kwargs(request_id, lim)
        kwargs["stream"] = True
        kwargs["stream_options"] = {"include_usage": True}
        loop = asyncio.get_running_loop()
        started = loop.time()
        first_by = min(lim.first_byte or lim.total, lim.total)
        phase = "first byte" if lim.first_byte is not None and lim.first_byte < lim.total else "total"
        stream = await self._timed(self._litellm.acompletion(**kwargs), lim, phase, first_by)
        try:
            # The first chunk before the stream is handed on: a refusal that
            # LiteLLM only raises on reading is still the attempt's failure.
            first = await self._timed(anext(stream), lim, phase, max(0.0, started + first_by - loop.time()))
        except StopAsyncIteration:
            await _close(stream)
            raise UpstreamError(f"The {self.name} provider ended the stream early.",
                                cause="stream ended before its first chunk") from None
        except BaseException:
            await _close(stream)
            raise
        return self._events(stream, first, lim, started, REQUEST_DEADLINE.get())

    async def _events(
        self, stream: Any, first: Any, lim: Limits, started: float, deadline: float | None
    ) -> AsyncIterator[Piece]:
        loop = asyncio.get_running_loop()
        end_by = min(started + lim.total, deadline if deadline is not None else math.inf)
        finished = False
        try:
            chunk: Any = first
            while True:
                events = from_wire.chunk_events(chunk)
                finished = finished or from_wire.finishes(events)
                for event in events:
                    yield Piece.of(event)
                now = loop.time()
                by = min(end_by, now + lim.idle) if lim.idle is not None else end_by
                phase = "idle between chunks" if lim.idle is not None and by < end_by else (
                    "total" if deadline is None or started + lim.total <= deadline else "request deadline")
                try:
                    chunk = await self._timed(anext(stream), lim, phase, max(0.0, by - now))
                except StopAsyncIteration:
                    break
            if not finished:
                raise UpstreamError(f"The {self.name} provider ended the stream early.",
                                    cause="stream ended without a finish reason")
        finally:
            await _close(stream)

    async def embed(self, req: EmbeddingRequest, target: Target, request_id: str) -> EmbeddingAnswer:
        lim = self._limits_for(target.timeouts)
        kwargs = to_wire.embedding_kwargs(req, target) | self._call_kwargs(request_id, lim)
        answer = await self._timed(self._litellm.aembedding(**kwargs), lim, "total", lim.total)
        return EmbeddingAnswer.of(from_wire.embedding_response(answer))


async def _close(stream: Any) -> None:
    """Close LiteLLM's stream, and so its upstream connection (an unfinished
    one is dropped, so the upstream stops generating)."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    close = getattr(stream, "close", None)
    if close is not None:
        close()
