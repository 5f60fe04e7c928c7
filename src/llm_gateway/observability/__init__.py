"""Observability: Prometheus metrics (``metrics``), the JSON logs
(``logs``), Sentry (``sentry``) and Langfuse (``langfuse``), brought together
by ``observer.Observer`` — the one object the rest of the gateway talks to
(SPEC §7; docs/observability.md). Nothing is imported here, so that
``llm_gateway.observability.logs`` stays light for the command line."""
