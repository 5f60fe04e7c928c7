"""Streaming latency: sequential streamed chat completions over one
keep-alive connection, timing the first ``data:`` event (TTFT) and the end
of the stream."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp

from procs import BenchError


@dataclass(slots=True)
class StreamSample:
    ttft_ms: float
    total_ms: float


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation, so p99 is a real sample)."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


async def _one(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> StreamSample:
    start = time.perf_counter()
    first: float | None = None
    done = False
    async with session.post(url, data=body, headers=headers) as resp:
        if resp.status != 200:
            text = (await resp.read()).decode(errors="replace")[:2000]
            raise BenchError(f"streaming request to {url} answered {resp.status}: {text}")
        async for line in resp.content:
            if not line.startswith(b"data:"):
                continue
            if first is None:
                first = time.perf_counter()
            if line.strip() == b"data: [DONE]" or line.startswith(
                    (b'data: {"type":"message_stop"', b'data: {"type":"response.completed"')):
                done = True  # the end of an OpenAI chat, Anthropic or OpenAI responses stream
            elif line.startswith((b'data: {"type":"error"', b'data: {"type":"response.failed"')) or (
                    b'"error":{' in line and b'"type":"response.' not in line):
                raise BenchError(f"stream from {url} carried an error event: {line[:2000]!r}")
    end = time.perf_counter()
    if first is None or not done:
        raise BenchError(f"stream from {url} ended without {'data' if first is None else 'data: [DONE]'}")
    return StreamSample((first - start) * 1e3, (end - start) * 1e3)


async def measure(url: str, body: bytes, n: int, warmup: int = 10, api_key: str = "") -> list[StreamSample]:
    """``warmup`` unrecorded requests, then ``n`` recorded ones, one at a time."""
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(warmup):
            await _one(session, url, body, headers)
        return [await _one(session, url, body, headers) for _ in range(n)]
