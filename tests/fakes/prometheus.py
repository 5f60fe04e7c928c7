"""What Prometheus does with ``/metrics``, for tests: scrape it and read the
samples back by name and labels."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

# SPEC §8: every family shows in /metrics from start-up.
SPEC_FAMILIES = (
    "gateway_requests_total", "gateway_request_duration_seconds", "gateway_time_to_first_token_seconds",
    "gateway_upstream_duration_seconds", "gateway_tokens_total", "gateway_cost_usd_total",
    "gateway_cache_requests_total", "gateway_rate_limited_total", "gateway_circuit_state",
    "gateway_in_flight_requests",
)


@dataclass
class Scrape:
    text: str
    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        return sum(v for n, ls, v in self.samples if n == name and all(ls.get(k) == x for k, x in labels.items()))

    def labels(self, name: str) -> list[dict[str, str]]:
        return [ls for n, ls, _ in self.samples if n == name]

    def declared(self, family: str) -> bool:
        return f"# TYPE {family} " in self.text


def scrape(base_url: str, headers: dict[str, str] | None = None) -> Scrape:
    # A new connection each time: with several workers, any of them may answer.
    with httpx.Client(timeout=10, headers={"connection": "close"}) as http:
        resp = http.get(f"{base_url}/metrics", headers=headers or {})
    resp.raise_for_status()
    assert resp.headers["content-type"].startswith("text/plain")
    samples = [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(resp.text) for s in f.samples]
    return Scrape(resp.text, samples)
