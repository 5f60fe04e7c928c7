"""Schemathesis against a live gateway, with every check it has: what the
OpenAPI document says (statuses, content types, headers, response schemas,
constraints, security) is what the gateway does, and no input makes it fail
with a 5xx. Once with the master key, once with a user's key (a user with a
balance, made through the admin API).

Bounded for a small machine: a fixed seed, few examples per operation, no
stateful phase; about a minute in all. The run's own report is printed when
it finds something (``pytest -s`` or the failure's captured output).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import AUTH, MASTER_KEY, running_stack

pytestmark = pytest.mark.skipif(shutil.which("st", path=str(Path(sys.executable).parent)) is None,
                                reason="schemathesis is not installed (pip install -e '.[dev]')")

POSITIVE_DEFAULT = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
NEGATIVE_DEFAULT = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"]

# Requests the document cannot fully describe, answered 400 although they fit it:
# rules across fields, or about the present moment, which JSON Schema cannot state.
BY_DESIGN = """
# The /v1 request schemas summarise OpenAI's and Anthropic's; the decoders check
# more (a tool message needs content and tool_call_id, a tool needs a function, …).
[[operations]]
include-path-regex = "^/v1/(chat/completions|embeddings|messages)"
checks.positive_data_acceptance.expected-statuses = {positive_400}

# ?to= before ?from=.
[[operations]]
include-path-regex = "/usage$"
checks.positive_data_acceptance.expected-statuses = {positive_400}
"""

# Rules across fields or about the present moment, which JSON Schema cannot state:
# NewKey's expires_at in the past, budget_usd without budget_period.
NOT_IN_SCHEMA = """
[[operations]]
include-path-regex = "^/(admin/users/[^/]+/keys|me/keys)$"
include-method = ["POST"]
checks.positive_data_acceptance.expected-statuses = {positive_400}
"""


def _config(max_examples: int) -> str:
    positive_400 = str([*POSITIVE_DEFAULT, "400"]).replace("'", '"')
    # The body limit (413) is checked before the body is read, so before its schema.
    negative = str([*NEGATIVE_DEFAULT, "413"]).replace("'", '"')
    return f"""
seed = 1
workers = 1

[generation]
max-examples = {max_examples}
no-shrink = true

[phases.stateful]
enabled = false

[checks]
enabled = true

[checks.negative_data_rejection]
expected-statuses = {negative}
""" + (BY_DESIGN + NOT_IN_SCHEMA).format(positive_400=positive_400)


def _run(url: str, folder: Path, credential: str, name: str, *filters: str, max_examples: int) -> int:
    """One schemathesis run; the number of operations it tested."""
    config = folder / f"{name}.toml"
    config.write_text(_config(max_examples))
    junit = folder / f"{name}.xml"
    st = str(Path(sys.executable).parent / "st")
    command = [st, "--config-file", str(config), "run", f"{url}/openapi.json",
               "-H", f"Authorization: Bearer {credential}", "--report", "junit",
               "--report-junit-path", str(junit), *filters]
    env = os.environ | {"NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder, timeout=300)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    cases = ET.parse(junit).getroot().iter("testcase")
    return len({case.get("name") for case in cases})


def _user_key(url: str) -> str:
    """A user with $100 and an API key of their own."""
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        user = client.post("/admin/users", json={"email": "fuzz@example.com"})
        assert user.status_code == 201, user.text
        uid = user.json()["id"]
        credit = client.post(f"/admin/users/{uid}/credits", json={"amount_usd": "100.00"})
        assert credit.status_code == 201, credit.text
        key = client.post(f"/admin/users/{uid}/keys", json={"name": "fuzz"})
        assert key.status_code == 201, key.text
        plaintext: str = key.json()["key"]
        return plaintext


def _operations(url: str, prefix: str = "/") -> int:
    document: dict[str, Any] = httpx.get(f"{url}/openapi.json", timeout=30).json()
    return sum(len(item) for path, item in document["paths"].items() if path.startswith(prefix))


def test_the_gateway_does_what_its_openapi_document_says(tmp_path: Path) -> None:
    with running_stack(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/gateway.db") as stack:
        user_key = _user_key(stack.url)
        tested = _run(stack.url, tmp_path, MASTER_KEY, "master", max_examples=6)
        assert tested == _operations(stack.url)
        tested = _run(stack.url, tmp_path, user_key, "user", "--include-path-regex", "^/(v1|me)",
                      max_examples=6)
        assert tested == _operations(stack.url, "/v1") + _operations(stack.url, "/me")
