"""Sentry: unhandled errors, upstream failures and ERROR log records, each
tagged with the request id, model and user id.

The gateway keeps its own ``sentry_sdk.Client`` rather than the SDK's global
one, with no integrations: nothing is patched, no request body or header is
collected, local variables are never sent, and two gateways in one process
(as in the tests) report to their own DSNs. Events are built on the calling
thread and sent by the SDK's background worker; a small budget bounds how
many a burst of failures can make.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from llm_gateway import __version__

if TYPE_CHECKING:
    from sentry_sdk import Client

# Credentials that could appear inside an exception message or log line.
_SECRETS = re.compile(
    r"(gw-[A-Za-z0-9_\-]{16,}|sk-[A-Za-z0-9_\-]{8,}|pk-lf-[A-Za-z0-9_\-]+|"
    r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*|(?i:bearer)\s+\S+)"
)
_REDACTED = "[redacted]"
_WITHHELD = "[message withheld: observability.log_bodies is off]"


def redact(text: str) -> str:
    return _SECRETS.sub(_REDACTED, text)


def _scrub(event: dict[str, Any], log_bodies: bool) -> dict[str, Any]:
    """Last look at every event before it leaves: drop what could carry a
    credential or message contents."""
    for key in ("request", "extra", "modules"):
        event.pop(key, None)
    for exc in (event.get("exception") or {}).get("values") or []:
        if isinstance(exc.get("value"), str):
            # An exception's message may quote a prompt; its type and stack
            # trace still say what failed where.
            exc["value"] = redact(exc["value"]) if log_bodies else _WITHHELD
        for frame in (exc.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        logentry["params"] = []
        if isinstance(logentry.get("message"), str):
            logentry["message"] = redact(logentry["message"])
    if isinstance(event.get("message"), str):
        event["message"] = redact(event["message"])
    event.pop("breadcrumbs", None)
    return event


class SentryReporter:
    """Reports to one DSN; every method is cheap when the budget is spent."""

    def __init__(self, dsn: str, log_bodies: bool, environment: str, burst: int = 50, per_second: float = 5.0) -> None:
        self._dsn = dsn
        self._log_bodies = log_bodies
        self._environment = environment
        self._client: Client | None = None
        self._burst = float(burst)
        self._rate = per_second
        self._tokens = float(burst)
        self._refilled = time.monotonic()
        self._handler: _ErrorLogHandler | None = None

    def start(self) -> None:
        import sentry_sdk

        self._client = sentry_sdk.Client(
            dsn=self._dsn, release=f"llm-gateway@{__version__}", environment=self._environment,
            default_integrations=False, auto_enabling_integrations=False, integrations=[],
            include_local_variables=False, max_request_body_size="never",
            max_breadcrumbs=0, before_send=lambda event, hint: _scrub(event, self._log_bodies),  # type: ignore[arg-type,return-value]
        )
        self._handler = _ErrorLogHandler(self)
        logging.getLogger("llm_gateway").addHandler(self._handler)

    def _allowed(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _capture(self, event: dict[str, Any], hint: dict[str, Any] | None, tags: dict[str, str],
                 user_id: str | None, fingerprint: list[str] | None = None) -> None:
        client = self._client
        if client is None or not self._allowed():
            return
        from sentry_sdk import Scope

        scope = Scope()
        for name, value in tags.items():
            scope.set_tag(name, value)
        if user_id is not None:
            scope.set_user({"id": user_id})
        if fingerprint is not None:
            scope.fingerprint = fingerprint
        client.capture_event(event, hint=hint, scope=scope)  # type: ignore[arg-type]

    def exception(self, exc: BaseException, tags: dict[str, str], user_id: str | None = None) -> None:
        """An error nothing handled (the client got a 500)."""
        if self._client is None or getattr(exc, _REPORTED, False):
            return
        # The outermost layer logs it again (api/guard.py): one event, with this request's tags.
        setattr(exc, _REPORTED, True)
        from sentry_sdk.utils import event_from_exception

        event, hint = event_from_exception(
            exc, client_options=self._client.options, mechanism={"type": "llm_gateway", "handled": False})
        event["level"] = "error"
        self._capture(dict(event), hint, tags, user_id)

    def upstream_failure(self, status: int, tags: dict[str, str], user_id: str | None) -> None:
        """A provider call that failed for the client (after retries and
        fallbacks): grouped by deployment and status."""
        deployment = tags.get("deployment") or "(none)"
        event = {"level": "error", "message": f"upstream failure: HTTP {status} from {deployment}",
                 "logger": "llm_gateway.upstream"}
        self._capture(event, None, tags, user_id, ["upstream-failure", deployment, str(status)])

    def log_record(self, record: logging.LogRecord) -> None:
        tags = {"logger": record.name}
        if record.exc_info and record.exc_info[1] is not None:
            self.exception(record.exc_info[1], tags)
            return
        event = {"level": "error", "logger": record.name, "logentry": {"message": record.getMessage(), "params": []}}
        self._capture(event, None, tags, None)

    async def aclose(self) -> None:
        """Send what is queued (a couple of seconds at most) and stop."""
        if self._handler is not None:
            logging.getLogger("llm_gateway").removeHandler(self._handler)
            self._handler = None
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close, 2.0)


_REPORTED = "_llm_gateway_reported_to_sentry"


class _ErrorLogHandler(logging.Handler):
    """ERROR records of the gateway's own loggers become Sentry events."""

    def __init__(self, reporter: SentryReporter) -> None:
        super().__init__(logging.ERROR)
        self._reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        self._reporter.log_record(record)
