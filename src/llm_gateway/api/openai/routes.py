"""OpenAI-dialect endpoints: ``/v1/chat/completions``, ``/v1/embeddings``,
``/v1/models``.

These are plain Starlette routes, not FastAPI ones: the hot path has no
dependency injection and no pydantic round trip — the body is parsed once
with orjson and validated by the decoder. Their OpenAPI description lives in
``schemas.OPENAPI_PATHS``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llm_gateway.api.auth import authenticate
from llm_gateway.api.calls import ChatDialect, as_gateway_error, chat_endpoint, refused
from llm_gateway.api.calls import call_headers as _headers
from llm_gateway.api.calls import cost_headers as _cost_headers
from llm_gateway.api.calls import gateway as _gateway
from llm_gateway.api.calls import new_call as _new_call
from llm_gateway.api.responses import JSONBytes, error_response, json_response, read_json, request_id
from llm_gateway.errors import GatewayError, ModelNotFound
from llm_gateway.pipeline import Call
from llm_gateway.settings import Pricing
from llm_gateway.state import GatewayState
from llm_gateway.types import ChatRequest
from llm_gateway.wire.answer import Answer, Piece
from llm_gateway.wire.openai_chat.decode import decode_chat_request, decode_embedding_request
from llm_gateway.wire.openai_chat.encode import ChunkEncoder, encode_chat_response, encode_embedding_response

_DONE = b"data: [DONE]\n\n"


def _body(result: Answer, req: ChatRequest, rid: str) -> bytes:
    own = result.body_in("openai.chat")
    return own if own is not None else orjson.dumps(encode_chat_response(result.response))


async def _sse(events: AsyncIterator[Piece], req: ChatRequest, rid: str, model: str) -> AsyncIterator[bytes]:
    """OpenAI SSE framing, one write per upstream event; an error after the
    first byte becomes one ``data: {"error": …}`` event and no ``[DONE]``."""
    encoder = ChunkEncoder(f"chatcmpl-{rid}", model, int(time.time()), req.include_usage)
    try:
        async for event in events:
            if event.dialect == "openai.chat":  # the upstream's own chunk (or one for the gateway only)
                if event.raw is not None:
                    yield b"data: " + event.raw + b"\n\n"
                continue
            for item in event.events:
                data = encoder.encode(item)
                if data is not None:
                    yield b"data: " + data + b"\n\n"
    except GatewayError as exc:
        yield b"data: " + exc.to_bytes() + b"\n\n"
        return
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    yield _DONE


CHAT = ChatDialect("chat", decode_chat_request, _sse, _body, GatewayError.to_bytes)
chat_completions = chat_endpoint(CHAT)


async def embeddings(request: Request) -> Response:
    started = time.perf_counter()
    gw = _gateway(request)
    rid = request_id(request, gw.ids)
    call: Call | None = None
    try:
        principal = await authenticate(request, gw)
        req = decode_embedding_request(await read_json(request, gw.settings.max_request_bytes))
        call = _new_call(request, rid, req.model, principal)
        result = await gw.pipeline.embed(req, call)
    except Exception as exc:
        err = as_gateway_error(exc, gw, call)
        if call is not None:
            gw.pipeline.finish(call, err.status_code)
        else:
            refused(gw, rid, "embeddings", err.status_code, started)
        return error_response(err, _headers(call, rid))
    body = result.raw
    if body is None:
        assert result.response is not None
        body = orjson.dumps(encode_embedding_response(result.response))
    gw.pipeline.finish(call, 200)
    return JSONBytes(body, headers=_cost_headers(call, rid))


def _model_object(gw: GatewayState, name: str) -> dict[str, Any]:
    model = gw.router.models[name]
    return {
        "id": name,
        "object": "model",
        "created": gw.started_at,
        "owned_by": model.deployments[0].provider,
        "pricing": _pricing(model.pricing),
    }


def _pricing(pricing: Pricing) -> dict[str, Any]:
    """The model's prices (USD per million tokens, decimal strings) and where
    they come from: ``config`` (or the built-in catalogue), ``litellm``
    (LiteLLM's bundled price map), or ``none`` (unpriced: free)."""
    cached = pricing.cached_input_per_mtok
    return {"input_per_mtok": format(pricing.input_per_mtok, "f"),
            "output_per_mtok": format(pricing.output_per_mtok, "f"),
            "cached_input_per_mtok": None if cached is None else format(cached, "f"),
            "source": pricing.source if pricing.model_fields_set else "none"}


async def list_models(request: Request) -> Response:
    gw = _gateway(request)
    rid = request_id(request, gw.ids)
    try:
        principal = await authenticate(request, gw)
    except GatewayError as exc:
        return error_response(exc, {"x-request-id": rid})
    data = [_model_object(gw, name) for name in gw.router.models if principal.may_use(name)]
    return json_response({"object": "list", "data": data}, headers={"x-request-id": rid})


async def retrieve_model(request: Request) -> Response:
    gw = _gateway(request)
    model_id: str = request.path_params["model_id"]
    rid = request_id(request, gw.ids)
    try:
        principal = await authenticate(request, gw)
        gw.router.resolve(model_id)
        if not principal.may_use(model_id):
            raise ModelNotFound(f"The model '{model_id}' does not exist or you do not have access to it.",
                                param="model")
    except GatewayError as exc:
        return error_response(exc, {"x-request-id": rid})
    return json_response(_model_object(gw, model_id), headers={"x-request-id": rid})


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"]),
]
