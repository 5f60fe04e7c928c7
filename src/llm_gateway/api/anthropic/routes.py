"""Anthropic-dialect endpoint: ``POST /v1/messages`` (SPEC §3).

A Messages API request to any configured model: it is decoded into the
canonical request and runs through the same pipeline as
``/v1/chat/completions`` (limits, cache, reservation, routing, billing,
observability), and the answer is encoded as a Messages API ``message`` or
event stream. The credential may come as ``x-api-key`` (what Anthropic's
SDKs send) or as a bearer token. Errors come in Anthropic's shape, with
Anthropic's error types by status (``encode.anthropic_error_body``). An
Anthropic deployment gets the client's own body and its answer goes back
byte for byte (passthrough, see ``providers/anthropic/adapter.py``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llm_gateway.api.auth import authenticate
from llm_gateway.api.calls import ChatDialect, chat_endpoint, gateway
from llm_gateway.api.responses import JSONBytes, read_json, request_id
from llm_gateway.errors import GatewayError, UpstreamRejected
from llm_gateway.settings import ModelSettings
from llm_gateway.state import GatewayState
from llm_gateway.tokens import estimate_prompt
from llm_gateway.types import ChatRequest
from llm_gateway.wire.answer import Answer, Piece
from llm_gateway.wire.anthropic.decode import decode_messages_request
from llm_gateway.wire.anthropic.encode import MessageStreamEncoder, anthropic_error_body, encode_message

log = logging.getLogger("llm_gateway.messages")


def _body(result: Answer, req: ChatRequest, rid: str) -> bytes:
    own = result.body_in("anthropic.messages")  # an Anthropic deployment's own answer
    return own if own is not None else orjson.dumps(encode_message(result, rid, req.model))


async def _sse(events: AsyncIterator[Piece], req: ChatRequest, rid: str, model: str) -> AsyncIterator[bytes]:
    """Anthropic SSE: an Anthropic deployment's own events as they came, or
    the encoding of any other's; an error after the first byte becomes one
    ``error`` event and the stream ends without ``message_stop``."""
    encoder = MessageStreamEncoder(f"msg_{rid}", model)
    try:
        first = await anext(events)
        if first.raw is not None and first.dialect == "anthropic.messages":
            yield first.raw
            async for event in events:
                if event.raw is not None:  # one deployment serves the whole stream
                    yield event.raw
            return
        yield encoder.start() + encoder.encode(first)
        async for event in events:
            data = encoder.encode(event)
            if data:
                yield data
    except GatewayError as exc:
        yield encoder.error(exc)
        return
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    yield encoder.finish()


def _headers(req: ChatRequest, request: Request) -> None:
    beta = request.headers.get("anthropic-beta")
    if beta and req.origin is not None:
        req.origin.headers["anthropic-beta"] = beta  # forwarded to Anthropic deployments


messages = chat_endpoint(ChatDialect("messages", decode_messages_request, _sse, _body, anthropic_error_body, _headers))


async def _count(gw: GatewayState, req: ChatRequest, model: ModelSettings, rid: str) -> tuple[int, bool]:
    """The request's input tokens and whether the count is exact: the first
    of the model's deployments that can count (an Anthropic one) does, else —
    or when it fails — the gateway's own estimate."""
    for route in gw.router.routes(model):
        counter = getattr(route.provider, "count_tokens", None)
        if counter is None:
            continue
        try:
            return await counter(req, route.target, rid), True
        except UpstreamRejected:
            raise  # the provider's verdict on the request itself
        except GatewayError as exc:
            log.info("token count on %s failed (%s); answering the estimate", route.label, type(exc).__name__)
        break
    return estimate_prompt(req), False


async def count_tokens(request: Request) -> Response:
    """``POST /v1/messages/count_tokens`` (``?beta=true`` too, as Claude Code
    calls it): ``{"input_tokens": n}``, counted by the model's Anthropic
    deployment when it has one, else estimated by the gateway;
    ``x-gateway-token-count`` says which. Not billed, not rate limited."""
    gw = gateway(request)
    rid = request_id(request, gw.ids)
    headers = {"x-request-id": rid}
    try:
        principal = await authenticate(request, gw)
        req = decode_messages_request(await read_json(request, gw.settings.max_request_bytes))
        _headers(req, request)
        model = gw.router.resolve(req.model)
        principal.check_model(model.name)
        count, exact = await _count(gw, req, model, rid)
    except GatewayError as exc:
        return JSONBytes(anthropic_error_body(exc), status_code=exc.status_code,
                         headers=exc.response_headers() | headers)
    headers["x-gateway-token-count"] = "exact" if exact else "estimate"
    return JSONBytes(orjson.dumps({"input_tokens": count}), headers=headers)


routes = [
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
