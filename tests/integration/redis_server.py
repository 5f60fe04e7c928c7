"""A Redis server of a test's own, to stop mid-test."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.databases import redis_url
from tests.fakes.server import free_port


@contextmanager
def own_redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start ``redis-server`` on a free port; yield its URL and process."""
    import redis

    redis_url()  # the same skip/fail rule as every Redis test
    port = free_port()
    try:
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        pytest.skip("redis-server is not installed")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url, proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def own_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with own_redis_server() as running:
        yield running


class RestartableRedis:
    """A ``redis-server`` of a test's own that can be killed and started
    again on the same port (a Redis restart, as clients see it)."""

    def __init__(self) -> None:
        redis_url()  # the same skip/fail rule as every Redis test
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0  # time.monotonic() just before the last start

    def start(self) -> float:
        """Start it; return the ``time.monotonic()`` at which it first answered
        PING (others may see it answer a little earlier: ``started_at``)."""
        import redis

        self.started_at = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except FileNotFoundError:
            pytest.skip("redis-server is not installed")
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2, socket_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return time.monotonic()
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.005)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def restartable_redis() -> Iterator[RestartableRedis]:
    server = RestartableRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()
