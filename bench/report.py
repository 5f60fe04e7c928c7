"""Benchmark results: the records, the printed table, and the JSON file."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stream_client import StreamSample, percentile
from wrk_runner import WrkResult


@dataclass(slots=True)
class StreamStats:
    """Percentiles of sequential streamed requests, in milliseconds."""

    requests: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float

    @classmethod
    def of(cls, samples: list[StreamSample]) -> StreamStats:
        ttft = [s.ttft_ms for s in samples]
        total = [s.total_ms for s in samples]
        return cls(len(samples), percentile(ttft, 50), percentile(ttft, 99),
                   percentile(total, 50), percentile(total, 99))


@dataclass(slots=True)
class PathResult:
    """Everything measured on one path: the fake upstream itself, or a gateway in front of it."""

    name: str
    load: list[WrkResult] = field(default_factory=list)
    stream: StreamStats | None = None
    config: dict[str, Any] | None = None
    startup_s: float | None = None
    rss_after_warmup_mib: float | None = None
    rss_after_load_mib: float | None = None


def _ms(v: float) -> str:
    return f"{v * 1000:.0f}us" if abs(v) < 1 else f"{v:.2f}ms"


def _load_table(direct: PathResult, gw: PathResult) -> list[str]:
    head = (f"{'conc':>5} {'direct rps':>11} {'gw rps':>9} {'ratio':>6} {'direct p50':>11} {'direct p99':>11}"
            f" {'gw p50':>9} {'gw p99':>9} {'added p50':>10} {'gw CPU/req':>11}")
    rows = [head, "-" * len(head)]
    by_conc = {r.concurrency: r for r in direct.load}
    for g in gw.load:
        d = by_conc.get(g.concurrency)
        if d is None:
            continue
        rows.append(
            f"{g.concurrency:>5} {d.rps:>11.0f} {g.rps:>9.0f} {g.rps / d.rps:>6.3f} {_ms(d.p50_ms):>11}"
            f" {_ms(d.p99_ms):>11} {_ms(g.p50_ms):>9} {_ms(g.p99_ms):>9} {_ms(g.p50_ms - d.p50_ms):>10}"
            f" {_ms(g.cpu_ms_per_request) if g.cpu_ms_per_request is not None else '-':>11}"
        )
    return rows


def _stream_table(direct: StreamStats, gw: StreamStats) -> list[str]:
    head = f"{'':>8} {'TTFT p50':>9} {'TTFT p99':>9} {'total p50':>10} {'total p99':>10}"
    rows = [head]
    for label, s in (("direct", direct), ("gateway", gw)):
        rows.append(f"{label:>8} {_ms(s.ttft_p50_ms):>9} {_ms(s.ttft_p99_ms):>9}"
                    f" {_ms(s.total_p50_ms):>10} {_ms(s.total_p99_ms):>10}")
    rows.append(f"{'added':>8} {_ms(gw.ttft_p50_ms - direct.ttft_p50_ms):>9}"
                f" {_ms(gw.ttft_p99_ms - direct.ttft_p99_ms):>9}"
                f" {_ms(gw.total_p50_ms - direct.total_p50_ms):>10}"
                f" {_ms(gw.total_p99_ms - direct.total_p99_ms):>10}")
    return rows


def render(meta: dict[str, Any], direct: PathResult, gateways: list[PathResult]) -> str:
    """The human-readable summary."""
    lines = [
        f"LLM Gateway benchmark — {meta['started']} — commit {meta['commit']}",
        f"gateway on core 0; fake upstream, wrk and the stream client on core 1; "
        f"wrk -t1, {meta['duration_s']}s per point",
    ]
    for gw in gateways:
        endpoint = meta.get("gateway_endpoint", "/v1/chat/completions")
        lines += ["", f"== gateway: {gw.name} ==", "", f"Non-streaming, gateway on {endpoint} (wrk):"]
        lines += _load_table(direct, gw)
        if direct.stream and gw.stream:
            lines += ["", f"Streaming, {gw.stream.requests} sequential requests, "
                          f"{meta['chunk_delay_ms']} ms between upstream chunks:"]
            lines += _stream_table(direct.stream, gw.stream)
        lines += [
            "",
            f"start-up (spawn -> first 200 from /health): {gw.startup_s or 0:.2f} s",
            f"RSS: {gw.rss_after_warmup_mib or 0:.1f} MiB after warm-up, "
            f"{gw.rss_after_load_mib or 0:.1f} MiB after load",
        ]
    return "\n".join(lines)


def render_profile(meta: dict[str, Any], direct: PathResult, lean: PathResult, paths: list[PathResult]) -> str:
    """The production profile beside the lean path: throughput at every
    concurrency with its ratio to lean, the latency added over the direct
    path at the lowest concurrency, and the gateway's CPU time per request."""
    concs = [r.concurrency for r in lean.load]
    low = min(concs)
    by = {p.name: {r.concurrency: r for r in p.load} for p in [direct, lean, *paths]}
    head = f"{'':<34}" + "".join(f"{f'c={c} req/s':>12}{'x lean':>7}" for c in concs)
    head += f"{f'added p50 c={low}':>17}{f'added p99 c={low}':>17}{f'p99 c={low}':>11}"
    head += "".join(f"{f'CPU/req c={c}':>14}" for c in concs)
    lines = ["", f"== production profile vs the lean path ({meta['duration_s']}s per point) ==", "", head,
             "-" * len(head)]
    d = by[direct.name][low]
    for path in [lean, *paths]:
        row = f"{path.name[:33]:<34}"
        for c in concs:
            r, base = by[path.name].get(c), by[lean.name][c]
            row += f"{r.rps:>12.0f}{r.rps / base.rps:>7.2f}" if r else f"{'-':>19}"
        r = by[path.name].get(low)
        if r is not None:
            row += f"{_ms(r.p50_ms - d.p50_ms):>17}{_ms(r.p99_ms - d.p99_ms):>17}{_ms(r.p99_ms):>11}"
        for c in concs:
            r = by[path.name].get(c)
            cpu = r.cpu_ms_per_request if r else None
            row += f"{_ms(cpu) if cpu is not None else '-':>14}"
        lines.append(row)
    lines += ["", "x lean: throughput over the lean path's at the same concurrency; added: over the direct path "
              "(client -> fake upstream); CPU/req: the gateway's CPU time (user + system) per request."]
    return "\n".join(lines)


def write_json(path: Path, meta: dict[str, Any], direct: PathResult, gateways: list[PathResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "direct": asdict(direct), "gateways": [asdict(g) for g in gateways]}
    path.write_text(json.dumps(data, indent=2) + "\n")
