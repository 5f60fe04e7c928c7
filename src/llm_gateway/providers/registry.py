"""From a provider ``kind`` to its adapter class: a table, not an if-chain.

Adapters are imported only for the kinds a deployment configures.
"""

from __future__ import annotations

import importlib
from typing import cast

from llm_gateway.providers.base import Provider
from llm_gateway.settings import ProviderSettings

ADAPTERS: dict[str, str] = {
    "openai": "llm_gateway.providers.openai.adapter:OpenAIProvider",
    "openai_compatible": "llm_gateway.providers.openai.adapter:OpenAIProvider",
    "anthropic": "llm_gateway.providers.anthropic.adapter:AnthropicProvider",
    "gemini": "llm_gateway.providers.gemini.adapter:GeminiProvider",
    "mock": "llm_gateway.providers.mock:MockProvider",
    "litellm": "llm_gateway.providers.litellm.adapter:LiteLLMProvider",
}


def build_provider(settings: ProviderSettings) -> Provider:
    module_name, _, class_name = ADAPTERS[settings.kind].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cast(Provider, cls(settings))
