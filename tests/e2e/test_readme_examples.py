"""The README's examples run as written against a fresh gateway: the curl
walk-through (the only edits are the address and the master key a first
start prints), the rate-limit example after it, and the openai and
anthropic SDK snippets. README and docs point only at what a user has."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MASTER_KEY, running_stack

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(bash|python)\n(.*?)```", README, re.S)


def _blocks(lang: str, needle: str) -> list[str]:
    return [code for kind, code in BLOCKS if kind == lang and needle in code]


def test_readme_examples_run(tmp_path: Path) -> None:
    walk_through = _blocks("bash", "export MASTER=")
    rate_limits = _blocks("bash", "$USER_ID")
    snippets = _blocks("python", "os.environ")
    assert len(walk_through) == 1 and len(rate_limits) == 2 and len(snippets) == 3
    rate_limits.remove(walk_through[0])

    with running_stack(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/readme.db") as stack:
        script = walk_through[0]
        for line, value in (("export GW=http://127.0.0.1:8080", f"export GW={stack.url}"),
                            ("export MASTER=gw-…", f"export MASTER={MASTER_KEY}")):
            assert line in script
            script = script.replace(line, value)
        script = "set -euo pipefail\n" + script + rate_limits[0] + 'echo "KEY=$KEY"\n'
        # python3 in the examples: this interpreter, whatever the machine has.
        env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert '"error"' not in out, out
        assert "Mock reply: Hello!" in out and "data: [DONE]" in out
        assert '"balance_usd":"10.000000"' in out and '"rpm":30' in out and '"name":"ci"' in out
        key = out.rsplit("KEY=", 1)[1].strip()
        assert key.startswith("gw-")

        for snippet in snippets:
            ran = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=120,
                                 env=os.environ | {"GW": stack.url, "KEY": key})
            assert ran.returncode == 0, ran.stderr
            assert "Mock reply: Hello!" in ran.stdout and "Mock reply: Stream it" in ran.stdout


@pytest.mark.parametrize("name", ["README.md", *sorted(p.name for p in (ROOT / "docs").glob("*.md"))])
def test_docs_point_only_at_what_users_have(name: str) -> None:
    text = (ROOT / name if name == "README.md" else ROOT / "docs" / name).read_text(encoding="utf-8")
    # Files and sections only the project's developers have: the shared folder beside the checkout, the spec.
    assert "/".join(("..", "shared")) not in text and "SPEC §" not in text
