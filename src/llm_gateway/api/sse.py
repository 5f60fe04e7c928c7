"""A lean ASGI response for Server-Sent Events.

Starlette's ``StreamingResponse`` runs every stream inside an anyio task
group; this one sends from the request's own task and keeps one small
watcher task that cancels the stream the moment the client disconnects, so
the upstream request is closed at once (SPEC §8, streams).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from starlette.types import Message, Receive, Scope, Send


class SSEResponse:
    __slots__ = ("_chunks", "_headers")

    def __init__(self, chunks: AsyncIterator[bytes], headers: Mapping[str, str]) -> None:
        self._chunks = chunks
        raw = [(b"content-type", b"text/event-stream; charset=utf-8")]
        raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        self._headers = raw

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        disconnected = False

        async def watch() -> None:
            nonlocal disconnected
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected = True
                    task.cancel()
                    return

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
            async for chunk in self._chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not disconnected:
                raise
            task.uncancel()
        except OSError:
            pass  # the client went away mid-write
        finally:
            watcher.cancel()
            await self._chunks.aclose()  # type: ignore[attr-defined]
