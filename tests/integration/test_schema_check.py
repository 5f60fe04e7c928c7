"""``serve`` refuses a PostgreSQL schema that ``migrate`` has not brought up
to date, with advice and without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import MASTER_KEY
from tests.databases import postgres_database


def test_serve_refuses_an_unmigrated_postgresql_database(tmp_path: Path) -> None:
    with postgres_database() as url:
        config = tmp_path / "pg.yaml"
        config.write_text(yaml.safe_dump({"database_url": url, "master_key": MASTER_KEY}))
        proc = subprocess.run(
            [sys.executable, "-m", "llm_gateway.cli", "serve", "--config", str(config), "--port", "9"],
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 1
        assert "run `llm-gateway migrate` first" in proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout


def test_an_old_replica_runs_on_a_schema_a_newer_gateway_migrated(tmp_path: Path) -> None:
    """A rolling upgrade: the schema is migrated first, old replicas keep
    serving (migrations are additive) and say they should be upgraded."""
    import sqlite3

    import httpx

    from tests.integration.processes import gateway_process

    db = tmp_path / "gw.db"
    config = {"database_url": f"sqlite+aiosqlite:///{db}", "master_key": MASTER_KEY}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    migrated = subprocess.run([sys.executable, "-m", "llm_gateway.cli", "migrate", "--config", str(path)],
                              capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0, migrated.stderr
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    with gateway_process(config, tmp_path, "old") as url:
        models = httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {MASTER_KEY}"})
        assert models.status_code == 200
    log = (tmp_path / "old.log").read_text()
    assert "newer than this gateway" in log and "upgrade this gateway" in log
    assert "Traceback" not in log
