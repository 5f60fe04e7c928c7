"""Header and body read timeouts on real server processes (a single
uvicorn process and gunicorn workers): a slowloris client or a stalled
body is disconnected, and a client that goes away is an info line, never an
error with a traceback."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from tests.integration.processes import gateway_process

MASTER = "gw-read-timeouts-master-key-0123456789abcdef"
CONFIG = {"master_key": MASTER, "http_header_timeout_s": 1, "http_body_timeout_s": 1}
# Far above the timeouts: a connection still open then was never going to be closed.
GIVE_UP_S = 15


@pytest.fixture(scope="module", params=[1, 2], ids=["uvicorn", "gunicorn"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("timeouts")
    config = CONFIG | {"database_url": f"sqlite+aiosqlite:///{folder}/gw.db"}
    with gateway_process(config, folder, "gw", workers=request.param, log_level="info") as url:
        yield url, folder / "gw.log"


def _connect(url: str) -> socket.socket:
    parsed = urlparse(url)
    conn = socket.create_connection((parsed.hostname, parsed.port), timeout=GIVE_UP_S)
    return conn


def _closed_by_server(conn: socket.socket, trickle: bytes = b"") -> bool:
    """Send ``trickle`` a byte at a time, 0.3 s apart, then wait: True once
    the server has closed the connection, False if it is still open after
    GIVE_UP_S."""
    deadline = time.monotonic() + GIVE_UP_S
    try:
        for byte in trickle:
            conn.sendall(bytes([byte]))
            time.sleep(0.3)
            if time.monotonic() > deadline:
                return False
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        return conn.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_slowloris_headers_are_cut_off(server: tuple[str, Path]) -> None:
    url, _ = server
    with _connect(url) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\n")
        started = time.monotonic()
        # A header byte every 0.3 s would last 30 s; the server gives 1 s for all of them.
        assert _closed_by_server(conn, b"X-Slow: " + b"a" * 100)
        assert time.monotonic() - started < GIVE_UP_S


def test_a_stalled_body_is_cut_off_and_logged_at_info(server: tuple[str, Path]) -> None:
    url, log = server
    with _connect(url) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + MASTER.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\": ")
        assert _closed_by_server(conn)
    # The server is still fine, and what it logged of the cut request is not an error.
    assert httpx.get(f"{url}/health").status_code == 200
    deadline = time.monotonic() + 5
    while "client disconnected" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    disconnects = [line for line in lines if "client disconnected" in line.get("msg", "")]
    assert disconnects, log.read_text()[-2000:]
    assert all(line["level"] == "info" for line in disconnects)
    assert not [line for line in lines if line["level"] in ("error", "critical")], log.read_text()[-2000:]
    assert "Traceback" not in log.read_text()


def test_an_ordinary_keep_alive_connection_is_not_cut(server: tuple[str, Path]) -> None:
    """The header timer starts at a request's first byte: an idle kept-alive
    connection between two requests is uvicorn's keep-alive's business."""
    url, _ = server
    with httpx.Client(base_url=url) as client:
        assert client.get("/health").status_code == 200
        time.sleep(1.5)  # longer than the 1 s header timeout, shorter than keep-alive
        assert client.get("/health").status_code == 200
        big = {"model": "mock", "messages": [{"role": "user", "content": "x" * 200_000}]}
        resp = client.post("/v1/chat/completions", json=big, headers={"authorization": f"Bearer {MASTER}"})
        assert resp.status_code == 200, resp.text
