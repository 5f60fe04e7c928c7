"""LiteLLM is optional: a gateway without a ``litellm`` provider never
imports it, and a config with one, where it is not installed, is refused at
start-up with a plain message naming the extra (no traceback). Each in a
fresh interpreter, where ``sys.modules`` tells the truth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[2]

# Serves a real gateway (its lifespan, providers started) from CONFIG in
# this process, makes a chat call and lists models, then prints whether
# anything of LiteLLM was imported.
_SERVE = """
import sys, httpx
from llm_gateway.app import create_app
from llm_gateway.settings import load_settings
from tests.fakes.server import serve_in_thread
gateway = serve_in_thread(create_app(load_settings(sys.argv[1], env={})))
try:
    auth = {"authorization": "Bearer gw-test-master-key-0123456789abcdefghijklmnop"}
    chat = httpx.post(gateway.url + "/v1/chat/completions", headers=auth, timeout=30,
                      json={"model": "mock", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 200, chat.text
    assert httpx.get(gateway.url + "/v1/models", headers=auth).status_code == 200
finally:
    gateway.stop()
print("litellm imported:", any(m == "litellm" or m.startswith("litellm.") for m in sys.modules))
"""

# Hides LiteLLM as if the extra were not installed, then runs the CLI.
_WITHOUT_LITELLM = """
import sys
class Hide:
    def find_spec(self, name, path=None, target=None):
        if name == "litellm" or name.startswith("litellm."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Hide())
from llm_gateway.cli import main
sys.exit(main(["check-config", "--config", sys.argv[1]]))
"""


def _config(tmp_path: Path, with_litellm: bool) -> Path:
    data: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/gw.db",
        "master_key": "gw-test-master-key-0123456789abcdefghijklmnop",
        "providers": [{"name": "oai", "kind": "openai", "api_base": "http://127.0.0.1:9/v1", "api_key": "x"}],
        "models": [{"name": "gpt", "deployments": [{"provider": "oai", "model": "gpt-4o-mini"}]}],
    }
    if with_litellm:
        data["providers"] += [{"name": "bedrock", "kind": "litellm",  # type: ignore[operator]
                               "litellm_params": {"aws_region_name": "us-east-1"}}]
        data["models"] += [{"name": "claude", "deployments": [  # type: ignore[operator]
            {"provider": "bedrock", "model": "bedrock/anthropic.claude-3-5-haiku-20241022-v1:0"}]}]
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _python(code: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, str(config)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_a_gateway_without_a_litellm_provider_never_imports_litellm(tmp_path: Path) -> None:
    run = _python(_SERVE, _config(tmp_path, with_litellm=False))
    assert run.returncode == 0, run.stderr
    assert "litellm imported: False" in run.stdout


def test_a_litellm_provider_imports_it(tmp_path: Path) -> None:
    # The same check sees LiteLLM when a provider needs it (so it can fail).
    run = _python(_SERVE, _config(tmp_path, with_litellm=True))
    assert run.returncode == 0, run.stderr
    assert "litellm imported: True" in run.stdout


def test_without_the_extra_start_up_fails_naming_it(tmp_path: Path) -> None:
    run = _python(_WITHOUT_LITELLM, _config(tmp_path, with_litellm=True))
    assert run.returncode == 2, run.stdout + run.stderr
    assert "pip install 'llm-gateway[litellm]'" in run.stderr
    assert "bedrock" in run.stderr and "Traceback" not in run.stderr
