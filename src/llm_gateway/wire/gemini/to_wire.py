"""Canonical requests → Gemini wire format (pure; no I/O).

Images given by http(s) URL must be downloaded by the caller first (Gemini
cannot fetch arbitrary URLs): ``remote_images`` lists them, and ``chat_body``
takes the downloaded bytes as ``InlineImage`` keyed by URL.

Schemas go up as JSON Schema (``parametersJsonSchema`` for tools,
``responseJsonSchema`` for ``json_schema`` output), which current Gemini
models accept as clients write them, ``additionalProperties`` included (see
the recorded ``streamGenerateContent-request-tools.json``). The older
``parameters`` / ``responseSchema`` fields take only an OpenAPI subset and
would need every client schema rewritten.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from llm_gateway.errors import InvalidRequest
from llm_gateway.types import ChatRequest, EmbeddingRequest, ImagePart, Message, OtherPart, TextPart, Tool
from llm_gateway.wire.gemini.tool_ids import signature_of

# Gemini 3 requires a signature on the first function call of each step; for
# calls it did not produce (another model's, or a hand-written history)
# Google documents this placeholder.
DUMMY_SIGNATURE = "skip_thought_signature_validator"

# Top-level keys of a client's JSON Schema that are not schema keywords
# Gemini understands.
_SCHEMA_DROP = frozenset({"$schema", "strict"})

_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "named": "ANY"}


@dataclass(slots=True, frozen=True)
class InlineImage:
    """A downloaded image, ready to send as ``inlineData``."""

    mime_type: str
    data: str  # standard base64


def model_path(model: str) -> str:
    """``gemini-2.5-flash`` or ``models/gemini-2.5-flash`` → ``models/gemini-2.5-flash``."""
    return model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"


def remote_images(req: ChatRequest) -> list[tuple[str, str]]:
    """``(param, url)`` of every http(s) image the adapter must download."""
    out = []
    for i, msg in enumerate(req.messages):
        for j, part in enumerate(msg.content):
            if isinstance(part, ImagePart) and not part.is_data_url:
                out.append((f"messages[{i}].content[{j}]", part.url))
    return out


def _schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    if not schema:
        return None
    return {k: v for k, v in schema.items() if k not in _SCHEMA_DROP}


def _tool(tool: Tool) -> dict[str, Any]:
    decl: dict[str, Any] = {"name": tool.name}
    if tool.description:
        decl["description"] = tool.description
    params = _schema(tool.parameters)
    if params is not None:
        decl["parametersJsonSchema"] = params
    return decl


def _image(part: ImagePart, param: str, images: Mapping[str, InlineImage]) -> dict[str, Any]:
    if part.is_data_url:
        mime, data = part.split_data_url()
        if not data:
            raise InvalidRequest(f"{param} is a data: URL without data.", param=param)
        return {"inlineData": {"mimeType": mime, "data": data}}
    image = images.get(part.url)
    if image is None:  # the adapter downloads every remote image first
        raise InvalidRequest(f"The image at {param} could not be fetched.", param=param)
    return {"inlineData": {"mimeType": image.mime_type, "data": image.data}}


def _content_parts(msg: Message, param: str, images: Mapping[str, InlineImage]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(msg.content):
        p = f"{param}.content[{j}]"
        if isinstance(part, TextPart):
            if part.text:  # Gemini refuses empty text parts
                parts.append({"text": part.text})
        elif isinstance(part, ImagePart):
            parts.append(_image(part, p, images))
        elif isinstance(part, OtherPart):
            kind = part.raw.get("type", "unknown")
            raise InvalidRequest(f"Content of type {kind!r} at {p} is not supported by Gemini.", param=p)
    return parts


def _text_only(msg: Message, param: str) -> str:
    for j, part in enumerate(msg.content):
        if not isinstance(part, TextPart):
            p = f"{param}.content[{j}]"
            raise InvalidRequest(f"Only text is supported at {p} for a {msg.role} message.", param=p)
    return msg.text


def _call_parts(msg: Message, param: str, names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for k, call in enumerate(msg.tool_calls):
        p = f"{param}.tool_calls[{k}].function.arguments"
        try:
            args = orjson.loads(call.arguments) if call.arguments.strip() else {}
        except orjson.JSONDecodeError:
            raise InvalidRequest(f"{p} is not valid JSON.", param=p) from None
        if not isinstance(args, dict):
            raise InvalidRequest(f"{p} must be a JSON object.", param=p)
        names[call.id] = call.name
        part: dict[str, Any] = {"functionCall": {"name": call.name, "args": args}}
        signature = signature_of(call.id) or (DUMMY_SIGNATURE if k == 0 else None)
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _function_response(msg: Message, param: str, names: dict[str, str]) -> dict[str, Any]:
    name = names.get(msg.tool_call_id or "") or msg.name
    if not name:
        p = f"{param}.tool_call_id"
        raise InvalidRequest(f"{p} does not match any earlier assistant tool call.", param=p)
    text = _text_only(msg, param)
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    response = value if isinstance(value, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


def _contents(req: ChatRequest, images: Mapping[str, InlineImage]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id → function name
    for i, msg in enumerate(req.messages):
        param = f"messages[{i}]"
        if msg.role == "system":
            if text := _text_only(msg, param):
                system.append(text)
            continue
        if msg.role == "assistant":
            role = "model"
            parts = _content_parts(msg, param, images) + _call_parts(msg, param, names)
        elif msg.role == "tool":
            role = "user"  # function results go in a user turn
            parts = [_function_response(msg, param, names)]
        else:
            role = "user"
            parts = _content_parts(msg, param, images)
        if not parts:
            continue
        # Gemini wants alternating turns: merge consecutive same-role messages
        # (parallel tool results become one user turn, as Gemini expects).
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    if not contents:
        raise InvalidRequest("messages must include a user message.", param="messages")
    return system, contents


# Thinking budgets (tokens) for OpenAI's reasoning efforts; "minimal" and "none"
# leave the model's own default (2.5 Pro cannot turn thinking off).
THINKING_BUDGETS = {"low": 1024, "medium": 8192, "high": 24576}


def _generation_config(req: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, wire in (
        ("temperature", "temperature"), ("top_p", "topP"), ("max_tokens", "maxOutputTokens"),
        ("stop", "stopSequences"), ("seed", "seed"), ("n", "candidateCount"),
        ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"),
    ):
        value = getattr(req, key)
        if value is not None:
            config[wire] = value
    budget = THINKING_BUDGETS.get(req.reasoning_effort or "")
    if budget is not None:  # OpenAI's reasoning effort, as a thinking budget
        config["thinkingConfig"] = {"thinkingBudget": budget}
    rf = req.response_format
    if rf is not None and rf.type != "text":
        config["responseMimeType"] = "application/json"
        schema = _schema(rf.schema) if rf.type == "json_schema" else None
        if schema is not None:
            config["responseJsonSchema"] = schema
    return config


def chat_body(req: ChatRequest, images: Mapping[str, InlineImage] | None = None) -> dict[str, Any]:
    """The generateContent / streamGenerateContent body for ``req`` (the
    model is in the URL). ``req.user`` and OpenAI-only extras are not sent."""
    system, contents = _contents(req, images or {})
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_tool(t) for t in req.tools]}]
    if req.tool_choice is not None and req.tools:
        calling: dict[str, Any] = {"mode": _TOOL_MODES[req.tool_choice.mode]}
        if req.tool_choice.mode == "named" and req.tool_choice.name:
            calling["allowedFunctionNames"] = [req.tool_choice.name]
        body["toolConfig"] = {"functionCallingConfig": calling}
    config = _generation_config(req)
    if config:
        body["generationConfig"] = config
    return body


def embedding_body(req: EmbeddingRequest, model: str) -> dict[str, Any]:
    """One batchEmbedContents body for all inputs. Gemini embeds text only."""
    requests: list[dict[str, Any]] = []
    path = model_path(model)
    for item in req.inputs:
        if not isinstance(item, str):
            raise InvalidRequest("Gemini embeddings take text input, not token arrays.", param="input")
        entry: dict[str, Any] = {"model": path, "content": {"parts": [{"text": item}]}}
        if req.dimensions is not None:
            entry["outputDimensionality"] = req.dimensions
        requests.append(entry)
    return {"requests": requests}
