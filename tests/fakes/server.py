"""Run an ASGI app (a fake upstream, or the gateway itself) with uvicorn on a
free 127.0.0.1 port in a background thread, for tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:<port>
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=1)
        if self.thread.is_alive():
            # A request still in flight (a fake upstream told to hang): no need to wait for it.
            self.server.force_exit = True
            self.thread.join(timeout=10)


def serve_in_thread(app: Any, *, lifespan: str = "auto") -> LiveServer:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan,
        loop="asyncio", http="httptools", access_log=False,
        # Like a real provider, keep idle connections longer than the gateway's
        # pool does: with uvicorn's 5 s, a pooled connection reused just as the
        # fake closes it is reset (a 502 with retries off), between test rounds.
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]

    def run() -> None:
        asyncio.run(server.serve())

    thread = threading.Thread(target=run, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server failed to start")
        time.sleep(0.01)
    return LiveServer(f"http://127.0.0.1:{port}", port, server, thread)
