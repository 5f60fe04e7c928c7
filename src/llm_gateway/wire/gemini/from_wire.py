"""Gemini wire format → canonical responses, usage and errors (pure).

- Thinking parts (``thought: true``) are the model's reasoning, not its
  answer: they are skipped (their tokens are still billed as output).
- Function calls carry no ids; each gets a fresh ``call_…`` id that also
  carries its thought signature (see ``tool_ids``).
- A prompt Gemini blocks (``promptFeedback.blockReason``, no candidates) is
  answered as one empty choice with finish reason ``content_filter``, the
  same streamed or not, rather than as an error: the request was valid and
  its prompt tokens may be billed.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import orjson

from llm_gateway.errors import UpstreamError
from llm_gateway.tokens import estimate_text
from llm_gateway.types import (
    ChatResponse,
    Choice,
    EmbeddingRequest,
    EmbeddingResponse,
    FinishReason,
    ToolCall,
    Usage,
)
from llm_gateway.wire.gemini.tool_ids import new_call_id
from llm_gateway.wire.openai_chat.encode import floats_to_base64

_FILTERED = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
})


def finish_reason(raw: str, has_calls: bool) -> FinishReason:
    """Gemini's ``finishReason`` → OpenAI's. Anything not a limit or a filter
    (``OTHER``, ``MALFORMED_FUNCTION_CALL``, …) ends the answer as ``stop``."""
    if raw == "MAX_TOKENS":
        return "length"
    if raw in _FILTERED:
        return "content_filter"
    return "tool_calls" if has_calls else "stop"


def usage(meta: Any) -> Usage | None:
    """``usageMetadata`` → canonical usage (SPEC §8): the prompt count already
    includes cached tokens; thinking tokens count as output."""
    if not isinstance(meta, dict):
        return None

    def count(key: str) -> int:
        value = meta.get(key)
        return value if isinstance(value, int) else 0

    thoughts = count("thoughtsTokenCount")
    return Usage(
        input_tokens=count("promptTokenCount"),
        output_tokens=count("candidatesTokenCount") + thoughts,
        cached_input_tokens=count("cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


def part_call(part: dict[str, Any]) -> ToolCall | None:
    """The tool call in a ``functionCall`` part, with a fresh id."""
    call = part.get("functionCall")
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    args = call.get("args")
    signature = part.get("thoughtSignature")
    return ToolCall(
        id=new_call_id(signature if isinstance(signature, str) else None),
        name=call["name"],
        arguments=orjson.dumps(args if isinstance(args, dict) else {}).decode(),
    )


def part_text(part: dict[str, Any]) -> str | None:
    """The answer text of a part; ``None`` for thoughts and non-text parts."""
    if part.get("thought") is True:
        return None
    text = part.get("text")
    return text if isinstance(text, str) else None


def candidate_parts(candidate: Any) -> list[dict[str, Any]]:
    if not isinstance(candidate, dict):
        return []
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def prompt_blocked(data: dict[str, Any]) -> bool:
    feedback = data.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason")) and not data.get("candidates")


def _choice(candidate: dict[str, Any], position: int) -> Choice:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for part in candidate_parts(candidate):
        text = part_text(part)
        if text is not None:
            texts.append(text)
        elif (call := part_call(part)) is not None:
            calls.append(call)
    index = candidate.get("index")
    raw = candidate.get("finishReason")
    return Choice(
        index=index if isinstance(index, int) else position,
        text="".join(texts) if texts or not calls else None,
        tool_calls=calls,
        finish_reason=finish_reason(raw if isinstance(raw, str) else "STOP", bool(calls)),
    )


def chat_response(data: Any, model: str) -> ChatResponse:
    """A generateContent answer → canonical response."""
    if not isinstance(data, dict):
        raise UpstreamError("The provider answered with an unexpected body.")
    candidates = data.get("candidates")
    if isinstance(candidates, list) and candidates:
        choices = [_choice(c, i) for i, c in enumerate(candidates) if isinstance(c, dict)]
    elif prompt_blocked(data):
        choices = [Choice(index=0, text="", finish_reason="content_filter")]
    else:
        raise UpstreamError("The provider answered with no candidates.")
    response_id = data.get("responseId")
    version = data.get("modelVersion")
    return ChatResponse(
        id=f"chatcmpl-{response_id}" if isinstance(response_id, str) else f"chatcmpl-{uuid.uuid4().hex}",
        model=version if isinstance(version, str) else model,
        created=int(time.time()),
        choices=choices,
        usage=usage(data.get("usageMetadata")),
    )


def embedding_response(data: Any, req: EmbeddingRequest, model: str) -> EmbeddingResponse:
    """A batchEmbedContents answer → canonical response. Gemini reports no
    token count for embeddings, so input tokens are estimated from the text
    (unless the answer carries ``usageMetadata``)."""
    embeddings = data.get("embeddings") if isinstance(data, dict) else None
    if not isinstance(embeddings, list) or len(embeddings) != len(req.inputs):
        raise UpstreamError("The provider answered with an unexpected embeddings body.")
    vectors: list[list[float]] = []
    for item in embeddings:
        values = item.get("values") if isinstance(item, dict) else None
        if not isinstance(values, list) or not all(
            isinstance(v, int | float) and math.isfinite(v) for v in values
        ):
            raise UpstreamError("The provider answered with an invalid embedding.")
        vectors.append([float(v) for v in values])
    out: list[list[float]] | list[str] = vectors
    if req.encoding_format == "base64":
        out = [floats_to_base64(v) for v in vectors]
    reported = usage(data.get("usageMetadata")) if isinstance(data, dict) else None
    tokens = reported.input_tokens if reported else sum(
        estimate_text(t) for t in req.inputs if isinstance(t, str)
    )
    return EmbeddingResponse(model, out, Usage(input_tokens=tokens))
