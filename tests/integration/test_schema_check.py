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
