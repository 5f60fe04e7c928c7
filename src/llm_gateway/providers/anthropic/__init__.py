"""Anthropic's Messages API (``POST {api_base}/messages``), served to clients
that speak OpenAI's Chat Completions through the canonical types."""
