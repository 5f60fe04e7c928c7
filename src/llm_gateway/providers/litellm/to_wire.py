"""Canonical requests → the keyword arguments of ``litellm.acompletion`` and
``litellm.aembedding`` (pure).

LiteLLM takes OpenAI's Chat Completions parameters for every provider, so
the body is the one the OpenAI adapter builds, with ``max_tokens`` always
set (the model's ``max_output_tokens`` when the client sent none: what the
gateway reserved funds for is then a true bound, whatever default LiteLLM
would pick for the provider) and http(s) images replaced by the data URLs
the adapter downloaded (LiteLLM would otherwise fetch them itself, for some
providers, from any address a client names).
"""

from __future__ import annotations

from typing import Any

from llm_gateway.providers.base import Target
from llm_gateway.settings import ProviderSettings
from llm_gateway.types import ChatRequest, EmbeddingRequest
from llm_gateway.wire.openai_chat import to_wire as openai_wire


def connection(settings: ProviderSettings, request_id: str) -> dict[str, Any]:
    """What every call carries: the provider's ``litellm_params`` as they are,
    its ``api_base``/``api_key``/headers, and LiteLLM's own retries off."""
    kwargs: dict[str, Any] = dict(settings.litellm_params)
    if settings.api_base:
        kwargs["api_base"] = settings.api_base
    if settings.api_key:
        kwargs["api_key"] = settings.api_key
    kwargs["extra_headers"] = {**(kwargs.get("extra_headers") or {}), **settings.headers,
                               "x-request-id": request_id}
    kwargs["num_retries"] = 0
    kwargs["max_retries"] = 0  # the SDK clients' own retries, for the providers that use one
    return kwargs


def chat_kwargs(req: ChatRequest, target: Target, images: dict[str, str] | None = None) -> dict[str, Any]:
    """``acompletion``'s parameters for ``req`` (without the connection's).
    ``images``: data URLs by the http(s) URL they replace."""
    body = openai_wire.chat_body(req, target.model)
    body.pop("max_completion_tokens", None)
    body["max_tokens"] = req.max_tokens if req.max_tokens is not None else target.max_output_tokens
    if images:
        body["messages"] = [_with_images(m, images) for m in body["messages"]]
    return body


def _with_images(message: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    content = message.get("content")
    if not isinstance(content, list):
        return message
    parts = []
    for part in content:
        url = (part.get("image_url") or {}).get("url") if part.get("type") == "image_url" else None
        if isinstance(url, str) and url in images:
            part = {**part, "image_url": {**part["image_url"], "url": images[url]}}
        parts.append(part)
    return {**message, "content": parts}


def embedding_kwargs(req: EmbeddingRequest, target: Target) -> dict[str, Any]:
    """``aembedding``'s parameters; vectors come back as floats (the gateway
    encodes base64 itself when the client asked for it)."""
    kwargs: dict[str, Any] = {"model": target.model, "input": req.inputs}
    if req.dimensions is not None:
        kwargs["dimensions"] = req.dimensions
    if req.user is not None:
        kwargs["user"] = req.user
    return kwargs
