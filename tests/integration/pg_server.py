"""A PostgreSQL server of a test's own, to stop and start mid-test (the
shared one is never stopped). Debian's server binaries, run as the
``postgres`` user when the tests run as root (PostgreSQL refuses root)."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.databases import IN_CI
from tests.fakes.server import free_port


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


class OwnPostgres:
    def __init__(self) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            message = "PostgreSQL's server binaries (initdb, pg_ctl) are not installed"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        self.bin = bin_dir
        self.port = free_port()
        # Not under pytest's folders: those are private to root, and the server runs as postgres.
        self.folder = Path(tempfile.mkdtemp(prefix="gw-own-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30", "start")

    def stop(self) -> None:
        """As an operator's restart: open connections are terminated."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def crash(self) -> None:
        """As a crash of the server: every process quits at once, without
        writing what it holds in memory (WAL buffers included)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")

    def close(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


def migrated(url: str) -> None:
    from llm_gateway.db import migrate
    from llm_gateway.db.engine import Database

    async def run() -> None:
        db = Database(url)
        try:
            await migrate.upgrade(db)
        finally:
            await db.aclose()

    asyncio.run(run())


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """A fresh, migrated PostgreSQL on a free port."""
    server = OwnPostgres()
    try:
        server.start()
        migrated(server.url)
        yield server
    finally:
        server.close()
