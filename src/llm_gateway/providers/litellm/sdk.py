"""The one place that imports LiteLLM, and what the gateway asks of it.

LiteLLM configures itself through module globals and the environment; both
are set here once, before and after its import: its price map is the one it
ships (no fetch at import; the gateway has no use for a fresher one, it
prices from its own copy), no telemetry, no callbacks, no debug banners on
standard output, and no retries of its own (the router decides).
"""

from __future__ import annotations

import os
from typing import Any

# Read by LiteLLM at import and on its first calls: keep it offline.
_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_OFFLINE_MODE": "true",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_TELEMETRY": "False",
}


def load(provider: str) -> Any:
    """``litellm``, imported and configured; ``ConfigError`` naming the
    extra when it is not installed."""
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import litellm
    except ImportError:
        from llm_gateway.providers.litellm.config import missing_extra

        raise missing_extra(provider) from None
    _configure(litellm)  # (again for each provider built: idempotent)
    return litellm


def _configure(litellm: Any) -> None:
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.set_verbose = False
    litellm.num_retries = 0
    litellm.drop_params = True  # a parameter the upstream lacks is dropped, as native adapters do
    for hooks in ("callbacks", "success_callback", "failure_callback", "_async_success_callback",
                  "_async_failure_callback", "input_callback", "service_callback"):
        if isinstance(getattr(litellm, hooks, None), list):
            setattr(litellm, hooks, [])
