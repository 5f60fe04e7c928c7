"""Uvicorn's HTTP protocol with the read timeouts it lacks.

Uvicorn closes an idle keep-alive connection, but a client that sends its
headers a byte every few seconds (slowloris), or stops halfway through a
body, holds a connection — and the request's task — for as long as it
likes. This protocol closes such connections, as nginx's
``client_header_timeout`` and ``client_body_timeout`` do:

- the request line and headers must arrive within ``header_timeout_s`` of
  the request's first byte (or of the connection's opening);
- the body may pause at most ``body_timeout_s`` between two pieces.

One timer per phase (not per piece): the body timer re-arms itself only
when it fires early, so a fast request costs two ``call_later``.
Used by ``llm-gateway serve`` and by the gunicorn workers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("llm_gateway.http")


class GuardedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc]
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._last_body = 0.0

    # ------------------------------------------------------------ timers

    def _arm(self, delay: float, callback: Any) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._read_timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _headers_too_slow(self) -> None:
        self._read_timer = None
        log.info("closing a connection from %s: no complete request headers within %g s",
                 _peer(self.client), self.header_timeout_s)
        self.transport.close()

    def _body_check(self) -> None:
        idle = self.loop.time() - self._last_body
        if idle < self.body_timeout_s:
            self._read_timer = self.loop.call_later(self.body_timeout_s - idle, self._body_check)
            return
        self._read_timer = None
        log.info("closing a connection from %s: its request body stalled for %g s",
                 _peer(self.client), self.body_timeout_s)
        self.transport.close()  # the app's receive() then reports a disconnect

    # ---------------------------------------------------- protocol hooks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, self._headers_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._read_timer is None:  # a request after another on a kept-alive connection
            self._arm(self.header_timeout_s, self._headers_too_slow)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._last_body = self.loop.time()
        self._arm(self.body_timeout_s, self._body_check)

    def on_body(self, body: bytes) -> None:
        self._last_body = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"


def guarded_protocol(header_timeout_s: float, body_timeout_s: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=``, with these timeouts."""
    return type("GatewayHttpProtocol", (GuardedHttpToolsProtocol,),
                {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s})
