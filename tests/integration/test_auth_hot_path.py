"""Once a key is warm, authenticating it costs no database round trip."""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import event

from tests.conftest import AUTH, Stack


def test_warm_key_needs_no_database_query(db_stack: Stack) -> None:
    base = db_stack.url
    user = httpx.post(f"{base}/admin/users", json={"email": f"hot{time.time_ns()}@example.com"}, headers=AUTH)
    key = httpx.post(f"{base}/admin/users/{user.json()['id']}/keys", json={"name": "hot"}, headers=AUTH).json()
    headers = {"authorization": f"Bearer {key['key']}"}
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers).status_code == 200
    time.sleep(0.2)  # let the once-a-minute last_used_at write finish

    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM api_keys" in statement or "FROM users" in statement:  # what authentication would read
            statements.append(statement)

    engine = db_stack.app.state.gateway.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    started = time.monotonic()
    try:
        with httpx.Client(base_url=base, headers=headers) as client:
            for _ in range(20):
                assert client.post("/v1/chat/completions", json=body).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    elapsed = time.monotonic() - started
    # Without Redis, entries live one second and are refreshed after half of
    # it: at most one reload per half second (a loaded machine may be slow).
    assert len(statements) <= 1 + int(elapsed / 0.5), (elapsed, statements)
    assert len(statements) < 20


def test_concurrent_first_uses_share_one_lookup(db_stack: Stack) -> None:
    from concurrent.futures import ThreadPoolExecutor

    base = db_stack.url
    user = httpx.post(f"{base}/admin/users", json={"email": f"herd{time.time_ns()}@example.com"}, headers=AUTH)
    key = httpx.post(f"{base}/admin/users/{user.json()['id']}/keys", json={"name": "herd"}, headers=AUTH).json()
    headers = {"authorization": f"Bearer {key['key']}"}
    lookups: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM api_keys" in statement:
            lookups.append(statement)

    engine = db_stack.app.state.gateway.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        with ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(lambda _: httpx.get(f"{base}/v1/models", headers=headers).status_code, range(64)))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert codes == [200] * 64
    # One load, plus a background refresh for each half-second the burst lasts: never one per request.
    assert 1 <= len(lookups) <= 4, len(lookups)
