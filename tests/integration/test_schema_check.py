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


def test_an_old_replica_is_told_to_upgrade_itself_not_to_migrate(tmp_path: Path) -> None:
    """During a rolling upgrade a newer gateway has migrated the database."""
    import sqlite3

    db = tmp_path / "gw.db"
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({"database_url": f"sqlite+aiosqlite:///{db}", "master_key": MASTER_KEY}))
    migrated = subprocess.run([sys.executable, "-m", "llm_gateway.cli", "migrate", "--config", str(config)],
                              capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0, migrated.stderr
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
    proc = subprocess.run(
        [sys.executable, "-m", "llm_gateway.cli", "serve", "--config", str(config), "--port", "9"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "newer than this gateway" in proc.stderr and "upgrade this gateway" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
