"""PostgreSQL goes away under load and comes back (issue 12): every answer
given is charged exactly once (a crash of the server: all but those of the
documented window when commits are asynchronous), a request that needs a reservation while the
database is down gets 503 ``database_unavailable`` (never a 500, the
connection kept), the gateway recovers by itself, and a charge owed at
shutdown goes to the money journal and is replayed by the next start."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import openai_server
from tests.integration.money import billing_config, books, serving, settled, user_with_key
from tests.integration.pg_server import own_postgres
from tests.integration.processes import gateway_process

BODY = {"model": "pricey", "max_tokens": 10, "messages": [{"role": "user", "content": "hi there"}]}
TTL_S = 4  # reservation_ttl_s: a hold nobody renews is released within TTL_S + TTL_S / 2


FAKE = openai_server.create_app()


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serving(FAKE) as url:
        yield url


def _config(upstream: str, database_url: str, folder: Path) -> dict[str, Any]:
    config = billing_config(upstream, database_url, folder, reservation_ttl_s=TTL_S, settle_wait_s=0.5)
    config["usage_flush_interval_s"] = 0.1
    return config


def _wait_for(condition: Any, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _load(urls: list[str], key: str, stop: threading.Event, out: list[httpx.Response | str], clients: int) -> None:
    def client(i: int) -> None:
        with httpx.Client(base_url=urls[i % len(urls)], headers={"authorization": f"Bearer {key}"},
                          timeout=30) as http:
            while not stop.is_set():
                try:
                    out.append(http.post("/v1/chat/completions", json=BODY))
                except httpx.HTTPError as exc:
                    out.append(type(exc).__name__)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join()


def test_postgres_stopped_under_load_loses_no_charge_and_answers_no_500(
    upstream: str, tmp_path: Path
) -> None:
    with own_postgres() as pg, gateway_process(_config(upstream, pg.url, tmp_path), tmp_path, "a") as a, \
            gateway_process(_config(upstream, pg.url, tmp_path), tmp_path, "b") as b:
        user_id, key = user_with_key(a, pg.url)
        stop = threading.Event()
        results: list[httpx.Response | str] = []
        loader = threading.Thread(target=_load, args=([a, b], key, stop, results, 20))
        loader.start()
        try:
            _wait_for(lambda: len(results) >= 50)
            before_outage = len(results)
            pg.stop()
            time.sleep(3)
            during = len(results)
            pg.start()
            _wait_for(lambda: sum(1 for r in results[during:] if getattr(r, "status_code", 0) == 200) >= 50)
        finally:
            stop.set()
            loader.join()

        assert not [r for r in results if isinstance(r, str)], "no connection may be dropped"
        responses = [r for r in results if not isinstance(r, str)]
        codes = {r.status_code for r in responses}
        assert codes <= {200, 503}, codes
        refused = [r for r in responses if r.status_code == 503]
        assert refused, "requests during the outage are refused"
        assert all(r.json()["error"]["code"] == "database_unavailable" for r in refused)
        assert all(r.headers.get("retry-after") for r in refused)
        ok = [r for r in responses if r.status_code == 200]
        assert during > before_outage
        assert sum(1 for r in results[during:] if getattr(r, "status_code", 0) == 200) >= 50, "it recovers by itself"

        # Every answer given is charged once, for what its header said; what
        # was held is released (owed charges retried, orphan holds swept).
        book = settled(pg.url, user_id, timeout_s=3 * TTL_S)
        assert book.reserved == 0 and book.open_holds == 0
        assert book.balance == book.ledger_sum == book.credits - sum(book.charges.values(), Decimal(0))
        for r in ok:
            assert book.charges[r.headers["x-request-id"]] == Decimal(r.headers["x-gateway-cost-usd"])
        assert all(r.headers["x-request-id"] not in book.charges for r in refused)
        assert len(book.charges) == len(ok)


def test_charges_owed_at_shutdown_are_journalled_and_replayed(upstream: str, tmp_path: Path) -> None:
    with own_postgres() as pg:
        config = _config(upstream, pg.url, tmp_path)
        with gateway_process(config, tmp_path, "first") as first:
            user_id, key = user_with_key(first, pg.url, "10")
            # Requests in flight when the database goes: answered, their charges owed.
            slow = {**BODY, "messages": [{"role": "user", "content": "fake-delay:3000"}]}
            answers: list[httpx.Response] = []

            def ask() -> None:
                answers.append(httpx.post(f"{first}/v1/chat/completions", json=slow,
                                          headers={"authorization": f"Bearer {key}"}, timeout=30))

            threads = [threading.Thread(target=ask) for _ in range(5)]
            for t in threads:
                t.start()
            _wait_for(lambda: sum("fake-delay" in str(r) for r in FAKE.state.requests) == 5)
            pg.stop()
            for t in threads:
                t.join()
            assert [r.status_code for r in answers] == [200] * 5
        # The gateway has stopped with the database still down: the charges are in the journal.
        journal = list((tmp_path / "journal").glob("*.jsonl"))
        assert len(journal) == 1 and len(journal[0].read_text().splitlines()) == 5
        pg.start()
        assert books(pg.url, user_id).charges == {}
        with gateway_process(config, tmp_path, "second"):
            book = settled(pg.url, user_id, timeout_s=3 * TTL_S)
            deadline = time.monotonic() + 10
            while len(book.charges) < 5 and time.monotonic() < deadline:
                time.sleep(0.1)
                book = books(pg.url, user_id)
        assert {rid: book.charges.get(rid) for rid in (r.headers["x-request-id"] for r in answers)} == {
            r.headers["x-request-id"]: Decimal(r.headers["x-gateway-cost-usd"]) for r in answers}
        assert book.balance == book.ledger_sum and book.reserved == 0 and book.open_holds == 0
        assert not list((tmp_path / "journal").iterdir()), "a replayed journal is deleted"


# billing.synchronous_commit off: a crash of the PostgreSQL server may lose
# the money writes of its last three wal_writer_delay (0.6 s by default);
# docs/billing.md promises one second.
LOSS_WINDOW_S = 1.0


@pytest.mark.parametrize("synchronous", [False, True], ids=["async-commit", "synchronous-commit"])
def test_postgres_crash_under_load_loses_at_most_the_documented_window(
    upstream: str, tmp_path: Path, synchronous: bool
) -> None:
    config = _config(upstream, "", tmp_path)
    config["billing"]["synchronous_commit"] = synchronous
    with own_postgres() as pg:
        config["database_url"] = pg.url
        with gateway_process(config, tmp_path, "a") as a:
            user_id, key = user_with_key(a, pg.url)
            stop = threading.Event()
            answers: list[tuple[float, httpx.Response]] = []  # when each answer arrived, and it

            def client() -> None:
                with httpx.Client(base_url=a, headers={"authorization": f"Bearer {key}"}, timeout=30) as http:
                    while not stop.is_set():
                        answer = http.post("/v1/chat/completions", json=BODY)
                        answers.append((time.monotonic(), answer))

            threads = [threading.Thread(target=client) for _ in range(8)]
            for t in threads:
                t.start()
            try:
                _wait_for(lambda: len(answers) >= 300)
                crashed_at = time.monotonic()
                pg.crash()
                time.sleep(1)
                during = len(answers)
                pg.start()
                try:
                    _wait_for(lambda: sum(1 for _, r in answers[during:] if r.status_code == 200) >= 50)
                except AssertionError:  # say what it answered instead, and what its log said
                    print(Counter(r.status_code for _, r in answers[during:]), answers[-1][1].text,
                          (tmp_path / "a.log").read_text()[-3000:])
                    raise
            finally:
                stop.set()
                for t in threads:
                    t.join()
            book = settled(pg.url, user_id, timeout_s=3 * TTL_S)

        assert {r.status_code for _, r in answers} <= {200, 503}
        ok = [(at, r) for at, r in answers if r.status_code == 200]
        assert sum(1 for at, _ in ok if at < crashed_at) >= 250
        # Consistent whatever was lost: nothing held, no overdraft, the ledger equals the balance.
        assert book.reserved == 0 and book.open_holds == 0 and book.balance >= 0
        assert book.balance == book.ledger_sum == book.credits - sum(book.charges.values(), Decimal(0))
        for _, r in ok:
            rid = r.headers["x-request-id"]
            if rid in book.charges:  # never charged twice (books() asserts it) nor wrongly
                assert book.charges[rid] == Decimal(r.headers["x-gateway-cost-usd"])
        lost = [at for at, r in ok if r.headers["x-request-id"] not in book.charges]
        if synchronous:
            assert lost == [], "with synchronous commits a crash of the server loses no charge"
        else:
            # Whatever was lost was answered at most LOSS_WINDOW_S before the crash.
            print(f"charges lost to the crash: {len(lost)} of {len(ok)} answers, the oldest "
                  f"{max((crashed_at - at for at in lost), default=0):.3f} s before it")
            assert all(at >= crashed_at - LOSS_WINDOW_S for at in lost), [crashed_at - at for at in lost]
