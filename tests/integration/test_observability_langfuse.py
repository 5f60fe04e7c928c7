"""Langfuse, pointed at a fake ingestion API: one trace with one generation per
request, matching what the client got; contents only with ``log_bodies``;
and a Langfuse that hangs or is gone never holds a request up — its traces
wait in a bounded queue, and what does not fit is dropped and counted."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import AUTH, MASTER_KEY, Stack, running_stack
from tests.fakes import langfuse_server, openai_server
from tests.fakes.prometheus import scrape
from tests.fakes.server import serve_in_thread

PROMPT = "please keep this between us: 31337"


@contextmanager
def traced(folder: Path, **langfuse: Any) -> Iterator[tuple[Stack, Any, langfuse_server.LangfuseState]]:
    """A gateway whose Langfuse is the fake; yields it, the fake's server and its state."""
    log_bodies = langfuse.pop("log_bodies", False)
    collector = langfuse_server.create_app()
    server = serve_in_thread(collector)
    settings = {"public_key": langfuse_server.PUBLIC_KEY, "secret_key": langfuse_server.SECRET_KEY,
                "host": server.url, "flush_interval_s": 0.05} | langfuse
    try:
        extra = {"observability": {"langfuse": settings, "log_bodies": log_bodies}}
        with running_stack(folder, f"sqlite+aiosqlite:///{folder}/lf.db", extra) as stack:
            yield stack, server, collector.state.langfuse
    finally:
        server.stop()


def _user_client(stack: Stack) -> tuple[openai.OpenAI, str, str]:
    with httpx.Client(base_url=stack.url, headers=AUTH, timeout=10) as http:
        user = http.post("/admin/users", json={"email": f"lf-{secrets.token_hex(4)}@example.com"}).json()
        http.post(f"/admin/users/{user['id']}/credits", json={"amount_usd": "1.00"})
        key = http.post(f"/admin/users/{user['id']}/keys", json={"name": "k"}).json()
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key["key"], max_retries=0), user["id"], key["key"]


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _by_request(state: langfuse_server.LangfuseState) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    traces = {t["id"]: t for t in state.of_type("trace-create")}
    return {traces[g["traceId"]]["metadata"]["request_id"]: (traces[g["traceId"]], g)
            for g in state.of_type("generation-create")}


def test_a_trace_per_request(tmp_path: Path) -> None:
    with traced(tmp_path) as (stack, _, state):
        client, user_id, key = _user_client(stack)
        sent: dict[str, Any] = {}
        for i in range(2):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-test", messages=[{"role": "user", "content": f"{PROMPT} {i}"}])
            sent[raw.headers["x-request-id"]] = ("chat", raw.parse().usage, raw.headers["x-gateway-cost-usd"])
        stream = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": PROMPT}], stream=True,
            stream_options={"include_usage": True})
        usage = [c for c in stream.parse() if c.usage][-1].usage
        sent[stream.headers["x-request-id"]] = ("stream", usage, None)
        emb = client.embeddings.with_raw_response.create(model="emb-test", input=[PROMPT])
        sent[emb.headers["x-request-id"]] = ("embeddings", emb.parse().usage, emb.headers["x-gateway-cost-usd"])
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="badkey-test", messages=[{"role": "user", "content": PROMPT}])
        sent[err.value.response.headers["x-request-id"]] = ("failed", None, None)

        _wait(lambda: len(state.of_type("generation-create")) >= len(sent), "every trace")
        time.sleep(0.2)  # anything extra would have arrived by now
        got = _by_request(state)
        assert set(got) == set(sent) and len(state.of_type("trace-create")) == len(sent)
        for request_id, (kind, usage, cost) in sent.items():
            trace, generation = got[request_id]
            assert trace["userId"] == user_id
            assert "input" not in trace and "output" not in generation and "input" not in generation
            if kind == "failed":
                assert generation["level"] == "ERROR" and generation["metadata"]["status"] == 502
                assert generation["model"] == "badkey-test"
                continue
            assert generation["level"] == "DEFAULT" and generation["metadata"]["status"] == 200
            assert generation["model"] == ("emb-test" if kind == "embeddings" else "gpt-test")
            details = generation["usageDetails"]
            assert details["input"] + details["input_cached_tokens"] == usage.prompt_tokens
            assert details["total"] == usage.total_tokens
            assert generation["startTime"] < generation["endTime"]
            if cost is not None:
                assert abs(generation["costDetails"]["total"] - float(cost)) < 1e-12
            assert ("completionStartTime" in generation) == (kind == "stream")
        assert scrape(stack.url).value("gateway_langfuse_traces_sent_total") == len(sent)
        raw_text = b"".join(state.raw).decode()
        for secret in (PROMPT, key, MASTER_KEY, openai_server.API_KEY, langfuse_server.SECRET_KEY):
            assert secret not in raw_text


def test_contents_only_with_log_bodies(tmp_path: Path) -> None:
    with traced(tmp_path, log_bodies=True) as (stack, _, state):
        client, _, key = _user_client(stack)
        reply = client.chat.completions.with_raw_response.create(
            model="mock", messages=[{"role": "user", "content": PROMPT}])
        streamed = client.chat.completions.with_raw_response.create(
            model="mock", messages=[{"role": "user", "content": PROMPT + " again"}], stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
        _wait(lambda: len(state.of_type("generation-create")) >= 2, "both traces")
        got = _by_request(state)
        trace, generation = got[reply.headers["x-request-id"]]
        assert generation["input"] == {"messages": [{"role": "user", "content": PROMPT}]} == trace["input"]
        assert generation["output"]["content"] == reply.parse().choices[0].message.content
        _, generation = got[streamed.headers["x-request-id"]]
        assert generation["input"]["messages"][0]["content"] == PROMPT + " again"
        assert generation["output"] == {"role": "assistant", "content": text} and text
        assert key not in b"".join(state.raw).decode()


def test_messages_traces_carry_the_anthropic_contents(tmp_path: Path) -> None:
    with traced(tmp_path, log_bodies=True) as (stack, _, state):
        _, _, key = _user_client(stack)
        client = anthropic.Anthropic(base_url=stack.url, api_key=key, max_retries=0)
        reply = client.messages.with_raw_response.create(
            model="mock", max_tokens=50, system="Be brief.", messages=[{"role": "user", "content": PROMPT}])
        with client.messages.stream(model="mock", max_tokens=50,
                                    messages=[{"role": "user", "content": PROMPT + " again"}]) as stream:
            streamed = stream.get_final_message()
            streamed_id = stream.response.headers["x-request-id"]
        _wait(lambda: len(state.of_type("generation-create")) >= 2, "both traces")
        got = _by_request(state)
        trace, generation = got[reply.headers["x-request-id"]]
        assert trace["name"] == generation["name"] == "messages"
        assert generation["input"] == {"system": "Be brief.", "messages": [{"role": "user", "content": PROMPT}]}
        assert generation["output"] == {"role": "assistant", "content": [
            {"type": "text", "text": reply.parse().content[0].text}]}  # type: ignore[union-attr]
        assert generation["usageDetails"]["output"] == reply.parse().usage.output_tokens
        _, generation = got[streamed_id]
        assert generation["output"] == {"role": "assistant", "content": [
            {"type": "text", "text": streamed.content[0].text}]}  # type: ignore[union-attr]
        assert generation["usageDetails"]["output"] == streamed.usage.output_tokens > 0
        assert "completionStartTime" in generation


def test_a_hanging_or_absent_langfuse_holds_no_request_up(tmp_path: Path) -> None:
    total, queue = 12, 4
    with traced(tmp_path, max_queue=queue, batch_size=2, timeout_s=30) as (stack, server, state):
        state.answering.clear()  # accepts the connection, never answers
        client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=MASTER_KEY, max_retries=0)
        for i in range(total):
            reply = client.chat.completions.create(model="mock", messages=[{"role": "user", "content": f"hi {i}"}])
            assert reply.choices[0].message.content
        _wait(lambda: state.waiting == 1, "the exporter's request to be held")
        # Every request has been answered while the exporter's only request hangs.
        got = scrape(stack.url)
        dropped = got.value("gateway_langfuse_traces_dropped_total", reason="queue_full")
        assert dropped >= total - queue - 2
        assert got.value("gateway_langfuse_traces_sent_total") == 0

        state.answering.set()
        metric = "gateway_langfuse_traces_sent_total"
        _wait(lambda: scrape(stack.url).value(metric) + dropped == total, "the queue to drain")
        assert len(state.of_type("trace-create")) == total - dropped
        assert scrape(stack.url).value("gateway_langfuse_traces_dropped_total") == dropped

        server.stop()  # Langfuse is gone: requests still go through
        for i in range(5):
            client.chat.completions.create(model="mock", messages=[{"role": "user", "content": f"again {i}"}])
        assert scrape(stack.url).value("gateway_in_flight_requests") == 0
