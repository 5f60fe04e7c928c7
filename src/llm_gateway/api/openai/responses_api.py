"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` / ``DELETE
/v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``.

A request to any configured model runs through the same pipeline as chat
(limits, cache, reservation, routing and fallbacks, billing,
observability): ``wire.openai_responses.decode`` makes it canonical, and an
OpenAI deployment (kind ``openai``) gets the client's own body at its
``/responses`` and answers byte for byte; any other deployment's answer is
encoded as a ``response`` object or event stream
(``wire.openai_responses.encode``).

Conversation state is the gateway's, for every provider: a response is
stored for its user (``store``, the default; ``db.responses``), and
``previous_response_id`` rebuilds the input from it — the stored
conversation's input items and output, then this request's — so any model
can continue any conversation, and billing counts the rebuilt input. An
OpenAI deployment gets that rebuilt input too (its own state is never
relied on). Another user's id, or an expired one, is 404.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llm_gateway.api.auth import authenticate
from llm_gateway.api.calls import as_gateway_error, call_headers, cost_headers, gateway, new_call, refused
from llm_gateway.api.responses import JSONBytes, error_response, json_response, read_json, request_id
from llm_gateway.api.sse import SSEResponse
from llm_gateway.auth.principal import Principal
from llm_gateway.db.responses import ResponseStore
from llm_gateway.errors import GatewayError, InvalidRequest, NotFound
from llm_gateway.pipeline import Call
from llm_gateway.state import GatewayState
from llm_gateway.wire.answer import Answer, Piece
from llm_gateway.wire.fields import opt_int
from llm_gateway.wire.openai_responses.decode import ResponsesRequest, decode_responses_request, to_chat_request
from llm_gateway.wire.openai_responses.encode import ResponseStreamEncoder, encode_response
from llm_gateway.wire.openai_responses.from_wire import frame_data

log = logging.getLogger("llm_gateway.responses")
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
# Item types whose ids and status the gateway drops when it replays a
# stored conversation upstream (ids of another provider mean nothing there).
_REPLAYED = frozenset({"message", "function_call", "function_call_output"})
_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def _store(gw: GatewayState) -> ResponseStore:
    assert gw.responses is not None
    return gw.responses


def _not_found(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(f"No response found with id '{response_id[:200]}'.", param=param)


def _upstream_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A stored conversation as an OpenAI deployment takes it: items
    without the gateway's (or another upstream's) ids, reasoning only where
    it carries its own encrypted content."""
    out = []
    for item in items:
        kind = item.get("type", "message")
        if kind in _REPLAYED:
            out.append({k: v for k, v in item.items() if k not in ("id", "status")})
        elif kind != "reasoning" or item.get("encrypted_content"):
            out.append(item)
    return out


def _with_ids(items: list[dict[str, Any]], response_id: str) -> list[dict[str, Any]]:
    """Items as stored and listed: each with an id (``input_items`` pages by them)."""
    short = response_id.removeprefix("resp_")[:48]
    return [item if "id" in item else {**item, "id": f"{_ID_PREFIX.get(str(item.get('type')), 'item')}_{short}_{i}"}
            for i, item in enumerate(items)]


async def _conversation(gw: GatewayState, parsed: ResponsesRequest, principal: Principal) -> list[dict[str, Any]]:
    """The items the model sees: the stored conversation's, then these."""
    if parsed.previous_response_id is None:
        return parsed.items
    prev = await _store(gw).get(parsed.previous_response_id, principal.user_id)
    if prev is None:
        raise _not_found(parsed.previous_response_id, "previous_response_id")
    output = orjson.loads(prev.response).get("output") or []
    items = [*prev.input_items, *output, *parsed.items]
    if len(orjson.dumps(items)) > gw.settings.responses.max_stored_bytes:
        raise InvalidRequest(
            f"This conversation holds more than {gw.settings.responses.max_stored_bytes} bytes; "
            "start a new one (without previous_response_id).", code="invalid_value", param="previous_response_id")
    return items


async def _save(gw: GatewayState, parsed: ResponsesRequest, principal: Principal, items: list[dict[str, Any]],
                response: bytes, response_id: str) -> None:
    """Keep the response when the client asked (``store``); a database that
    fails here loses the stored copy, never the answer."""
    if not parsed.store:
        return
    try:
        await _store(gw).save(response_id, principal.user_id, parsed.model, _with_ids(items, response_id), response)
    except Exception as exc:  # the client has its answer; it cannot continue it
        log.error("could not store response %s (%s)", response_id, type(exc).__name__)


def _response_id(raw: bytes | None) -> str | None:
    try:
        data = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        return None
    rid = data.get("id") if isinstance(data, dict) else None
    return rid if isinstance(rid, str) and rid else None


async def _events(
    gw: GatewayState, pieces: AsyncIterator[Piece], parsed: ResponsesRequest, principal: Principal,
    items: list[dict[str, Any]], response_id: str, model: str,
) -> AsyncIterator[bytes]:
    """The SSE: an OpenAI deployment's own events as they came, or the
    encoding of any other's; a complete answer is stored at the end, before
    the stream closes (so the client can continue it at once)."""
    encoder = ResponseStreamEncoder(response_id, model, parsed.body)
    final: bytes | None = None
    try:
        first = await anext(pieces)
        if first.dialect == "openai.responses":
            async for piece in _chain(first, pieces):
                if piece.raw is None:
                    continue
                yield piece.raw
                if piece.usage is not None:  # the last event
                    data = frame_data(piece.raw)
                    if isinstance(data, dict) and data.get("type") in ("response.completed", "response.incomplete"):
                        final = orjson.dumps(data.get("response"))
        else:
            yield encoder.start() + encoder.encode(first.events)
            async for piece in pieces:
                data_bytes = encoder.encode(piece.events)
                if data_bytes:
                    yield data_bytes
            yield encoder.finish_stream()
            final = orjson.dumps(encoder.final)
    except GatewayError as exc:
        yield encoder.error(exc)
        return
    finally:
        await pieces.aclose()  # type: ignore[attr-defined]
    if final is not None:
        await _save(gw, parsed, principal, items, final, _response_id(final) or response_id)


async def _chain(first: Piece, rest: AsyncIterator[Piece]) -> AsyncIterator[Piece]:
    yield first
    async for piece in rest:
        yield piece


async def create_response(request: Request) -> Response:
    started = time.perf_counter()
    gw = gateway(request)
    rid = request_id(request, gw.ids)
    call: Call | None = None
    try:
        principal = await authenticate(request, gw)
        parsed = decode_responses_request(await read_json(request, gw.settings.max_request_bytes))
        items = await _conversation(gw, parsed, principal)
        body = parsed.body
        if parsed.previous_response_id is not None:  # the deployment gets the whole conversation
            body = {k: v for k, v in body.items() if k != "previous_response_id"} | {"input": _upstream_items(items)}
        req = to_chat_request(parsed, items, body)
        call = new_call(request, rid, req.model, principal)
        call.endpoint = "responses"
        response_id = f"resp_{uuid.uuid4().hex}"
        if req.stream:
            pieces = await gw.pipeline.chat_stream(req, call)
            model = call.route.deployment.model if call.route else req.model
            return SSEResponse(_events(gw, pieces, parsed, principal, items, response_id, model),  # type: ignore[return-value]
                               call_headers(call, rid) | _SSE_HEADERS)
        answer: Answer = await gw.pipeline.chat(req, call)
        out = answer.body_in("openai.responses")
        if out is None:
            out = orjson.dumps(encode_response(answer.response, response_id, req.model, parsed.body))
        else:
            response_id = _response_id(out) or response_id
        await _save(gw, parsed, principal, items, out, response_id)
    except Exception as exc:
        err = as_gateway_error(exc, gw, call)
        if call is not None:  # (a stream that had started records itself when it ends)
            gw.pipeline.finish(call, err.status_code)
        else:
            refused(gw, rid, "responses", err.status_code, started)
        return error_response(err, call_headers(call, rid))
    gw.pipeline.finish(call, 200)
    return JSONBytes(out, headers=cost_headers(call, rid))


async def _stored(request: Request) -> tuple[GatewayState, str, str, Principal]:
    gw = gateway(request)
    rid = request_id(request, gw.ids)
    principal = await authenticate(request, gw)
    return gw, rid, request.path_params["response_id"], principal


async def retrieve_response(request: Request) -> Response:
    headers = {"x-request-id": request_id(request, gateway(request).ids)}
    try:
        gw, rid, response_id, principal = await _stored(request)
        headers["x-request-id"] = rid
        stored = await _store(gw).get(response_id, principal.user_id)
        if stored is None:
            raise _not_found(response_id)
    except Exception as exc:
        return error_response(as_gateway_error(exc, gateway(request), None), headers)
    return JSONBytes(stored.response, headers=headers)


async def delete_response(request: Request) -> Response:
    headers = {"x-request-id": request_id(request, gateway(request).ids)}
    try:
        gw, rid, response_id, principal = await _stored(request)
        headers["x-request-id"] = rid
        if not await _store(gw).delete(response_id, principal.user_id):
            raise _not_found(response_id)
    except Exception as exc:
        return error_response(as_gateway_error(exc, gateway(request), None), headers)
    return json_response({"id": response_id, "object": "response", "deleted": True}, headers=headers)


async def list_input_items(request: Request) -> Response:
    """OpenAI's list format: ``order`` (``desc`` by default), ``limit``
    (1-100, 20 by default), ``after`` an item id."""
    headers = {"x-request-id": request_id(request, gateway(request).ids)}
    try:
        gw, rid, response_id, principal = await _stored(request)
        headers["x-request-id"] = rid
        query = dict(request.query_params)
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("order must be 'asc' or 'desc'.", code="invalid_value", param="order")
        raw_limit = query.get("limit", "20")
        if not raw_limit.isdigit():
            raise InvalidRequest("limit must be an integer between 1 and 100.", code="invalid_value", param="limit")
        limit = opt_int({"limit": int(raw_limit)}, "limit", 1, 100) or 20
        stored = await _store(gw).get(response_id, principal.user_id)
        if stored is None:
            raise _not_found(response_id)
    except Exception as exc:
        return error_response(as_gateway_error(exc, gateway(request), None), headers)
    items = stored.input_items if order == "asc" else stored.input_items[::-1]
    after = query.get("after")
    if after is not None:
        at = next((i for i, item in enumerate(items) if item.get("id") == after), None)
        items = items[at + 1:] if at is not None else []
    page = items[:limit]
    return json_response({
        "object": "list", "data": page, "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit,
    }, headers=headers)


routes = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
]
