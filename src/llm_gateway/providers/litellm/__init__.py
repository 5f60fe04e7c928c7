"""The ``litellm`` provider kind: LiteLLM's SDK, in process, for the providers
the gateway has no native adapter for (Bedrock, Vertex AI, Azure, Mistral,
Cohere, …). Nothing in this package imports LiteLLM at import time; only
``sdk.load`` does, when a ``litellm`` provider is built."""
