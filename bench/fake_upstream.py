"""A fast fake OpenAI upstream for benchmarks.

A raw asyncio ``Protocol`` on uvloop that parses just enough HTTP/1.1
(keep-alive, ``Content-Length`` and chunked request bodies) to answer
``POST /v1/chat/completions`` with a fixed, realistic ``chat.completion``, or,
when the body asks for ``"stream": true``, with a chunked SSE stream of
``chat.completion.chunk`` events ending in a usage chunk and ``data: [DONE]``.
The first chunk goes out at once; ``--chunk-delay-ms`` spaces the rest, so
time to first chunk and total time can be told apart.

It must stay far faster than the gateway, so every answer is prebuilt bytes
and the only per-request work is header parsing and one ``orjson.loads``.

    python bench/fake_upstream.py --port 9101 --chunk-delay-ms 2
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import orjson
import uvloop

_ID = "chatcmpl-BnchQ5Xx9rHB2ehcHZCRDsnuymUXc"
_CREATED = 1782955818
_MODEL = "gpt-4o-mini-2024-07-18"
_USAGE = {
    "prompt_tokens": 78,
    "completion_tokens": 9,
    "total_tokens": 87,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
_TEXT = ["The", " shortest", " is", " The", " Hobbit", ",", " at", " about", " 310", " pages", "."]

COMPLETION = orjson.dumps({
    "id": _ID,
    "object": "chat.completion",
    "created": _CREATED,
    "model": _MODEL,
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "".join(_TEXT), "refusal": None, "annotations": []},
        "logprobs": None,
        "finish_reason": "stop",
    }],
    "usage": _USAGE,
    "service_tier": "default",
    "system_fingerprint": "fp_d0469e1700",
})


def _chunk(delta: dict[str, object], finish: str | None = None, usage: object = None) -> dict[str, object]:
    choices = [] if usage else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return {
        "id": _ID, "object": "chat.completion.chunk", "created": _CREATED, "model": _MODEL,
        "service_tier": "default", "system_fingerprint": "fp_d0469e1700",
        "choices": choices, "usage": usage,
    }


def _stream_events() -> list[bytes]:
    """The SSE events of one streamed answer, each framed as one HTTP chunk."""
    objs = [_chunk({"role": "assistant", "content": "", "refusal": None})]
    objs += [_chunk({"content": t}) for t in _TEXT]
    objs += [_chunk({}, finish="stop"), _chunk({}, usage=_USAGE)]
    events = [b"data: " + orjson.dumps(o) + b"\n\n" for o in objs] + [b"data: [DONE]\n\n"]
    return [b"%x\r\n%s\r\n" % (len(e), e) for e in events]


STREAM_CHUNKS = _stream_events()
_COMMON = b"x-request-id: req_bench\r\nopenai-processing-ms: 1\r\nopenai-version: 2020-10-01\r\n"
COMPLETION_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + _COMMON
    + b"content-length: %d\r\n\r\n" % len(COMPLETION) + COMPLETION
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n" + _COMMON
    + b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
_LAST_CHUNK = b"0\r\n\r\n"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


class _Request:
    """One parsed request: just what the fake needs to answer it."""

    __slots__ = ("body", "close", "method", "path")

    def __init__(self, method: bytes, path: bytes, body: bytes, close: bool) -> None:
        self.method, self.path, self.body, self.close = method, path, body, close


def _parse_chunked(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body from ``buf[start:]``: (body, end offset), or None if incomplete."""
    parts: list[bytes] = []
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)  # no trailers expected; tolerate them
            return (b"".join(parts), end + 4) if end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos:pos + size]))
        pos += size + 2


def parse_request(buf: bytearray) -> tuple[_Request, int] | None:
    """Parse one request from the front of ``buf``: (request, bytes used), or None if incomplete.

    Raises ``ValueError`` on a request it cannot make sense of."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    lines = bytes(buf[:head_end]).split(b"\r\n")
    method, path, version = lines[0].split(b" ", 2)
    length, chunked, close = 0, False, version == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = value.strip().lower() == b"close"
    start = head_end + 4
    if chunked:
        decoded = _parse_chunked(buf, start)
        if decoded is None:
            return None
        body, end = decoded
    else:
        end = start + length
        if len(buf) < end:
            return None
        body = bytes(buf[start:end])
    return _Request(method, path, body, close), end


def wants_stream(body: bytes) -> bool:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("stream") is True


class FakeOpenAI(asyncio.Protocol):
    """One connection. Requests are answered in order; while a delayed stream
    is being sent, later (pipelined) requests wait in the buffer."""

    def __init__(self, chunk_delay_s: float) -> None:
        self._delay = chunk_delay_s
        self._buf = bytearray()
        self._busy = False
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport does not subclass asyncio.Transport, hence a cast.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy:
            self._drain()

    def _drain(self) -> None:
        while self._transport is not None and not self._busy:
            try:
                parsed = parse_request(self._buf)
            except ValueError:
                self._transport.write(BAD_REQUEST)
                self._transport.close()
                return
            if parsed is None:
                return
            req, used = parsed
            del self._buf[:used]
            self._answer(req)

    def _answer(self, req: _Request) -> None:
        assert self._transport is not None
        if req.method != b"POST" or not req.path.startswith(b"/v1/chat/completions"):
            self._transport.write(NOT_FOUND)
        elif not wants_stream(req.body):
            self._transport.write(COMPLETION_RESPONSE)
        elif self._delay <= 0:
            self._transport.write(STREAM_HEAD + b"".join(STREAM_CHUNKS) + _LAST_CHUNK)
        else:
            self._busy = True
            self._transport.write(STREAM_HEAD + STREAM_CHUNKS[0])
            asyncio.get_running_loop().call_later(self._delay, self._send_chunk, 1, req.close)
            return
        if req.close:
            self._transport.close()

    def _send_chunk(self, index: int, close: bool) -> None:
        if self._transport is None:
            return
        if index < len(STREAM_CHUNKS) - 1:
            self._transport.write(STREAM_CHUNKS[index])
            asyncio.get_running_loop().call_later(self._delay, self._send_chunk, index + 1, close)
            return
        # [DONE] and the end of the body together, as real servers do.
        self._transport.write(STREAM_CHUNKS[index] + _LAST_CHUNK)
        self._busy = False
        if close:
            self._transport.close()
        else:
            self._drain()


async def serve(host: str, port: int, chunk_delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeOpenAI(chunk_delay_s), host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="pause between stream chunks")
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.chunk_delay_ms / 1000))


if __name__ == "__main__":
    main()
