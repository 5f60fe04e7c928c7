"""Credentials never appear in logs, errors or responses."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import AUTH, MASTER_KEY
from tests.integration.processes import gateway_process


def test_credentials_absent_from_logs_and_responses(tmp_path: Path) -> None:
    config = {"master_key": MASTER_KEY, "database_url": f"sqlite+aiosqlite:///{tmp_path}/leak.db",
              "auth": {"jwt_secret": "a-jwt-secret-that-must-never-be-printed-0123"}}
    password = "Sup3r secret pa$$word"
    seen: list[str] = []
    with gateway_process(config, tmp_path, "gw", log_level="debug") as base, httpx.Client(timeout=10) as http:
        user = http.post(f"{base}/admin/users", json={"email": "leak@example.com", "password": password},
                         headers=AUTH)
        seen.append(user.text)
        key = http.post(f"{base}/admin/users/{user.json()['id']}/keys", json={"name": "k"}, headers=AUTH).json()
        login = http.post(f"{base}/auth/login", json={"email": "leak@example.com", "password": password}).json()
        secrets = [MASTER_KEY, password, key["key"], login["access_token"], login["refresh_token"],
                   config["auth"]["jwt_secret"]]  # type: ignore[index]
        wrong_key = key["key"][:-4] + "xxxx"
        for credential in (key["key"], wrong_key, login["access_token"] + "x", "gw-" + "A" * 43):
            for path in ("/v1/models", "/me", "/admin/users"):
                seen.append(http.get(f"{base}{path}", headers={"authorization": f"Bearer {credential}"}).text)
        seen.append(http.post(f"{base}/auth/login", json={"email": "leak@example.com", "password": "wrong!!!!"}).text)
        seen.append(http.post(f"{base}/auth/refresh", json={"refresh_token": login["refresh_token"] + "x"}).text)
        seen.append(http.get(f"{base}/admin/users", headers=AUTH).text)
        seen.append(http.get(f"{base}/admin/keys", headers=AUTH).text)
        seen.append(http.delete(f"{base}/admin/keys/{key['id']}", headers=AUTH).text)
        seen.append(http.get(f"{base}/v1/models", headers={"authorization": f"Bearer {key['key']}"}).text)
    log = (tmp_path / "gw.log").read_text()
    assert "gateway started" in log  # the log was written at debug level
    for secret in [*secrets, wrong_key]:
        assert secret not in log, "a credential reached the log"
        for text in seen:
            assert secret not in text, "a credential reached a response"
    assert "argon2" not in "".join(seen) and "key_hash" not in "".join(seen)
