"""Token estimates, for admission (limits, reservations) and for output that
arrived without a provider's usage count.

No tokenizer is bundled (they download their vocabularies at run time), so
the estimate is the usual ~4 characters per token, rounded up, plus a small
per-message overhead as OpenAI's chat format adds.
"""

from __future__ import annotations

from llm_gateway.types import ChatRequest, ImagePart, TextPart

_PER_MESSAGE = 4
_PER_IMAGE = 765  # OpenAI's cost of a high-detail 512×512 tile set; a safe upper-ish guess


def estimate_text(text: str) -> int:
    return (len(text) + 3) // 4


def estimate_prompt(req: ChatRequest) -> int:
    total = 3
    for m in req.messages:
        total += _PER_MESSAGE
        for p in m.content:
            if isinstance(p, TextPart):
                total += estimate_text(p.text)
            elif isinstance(p, ImagePart):
                total += _PER_IMAGE
        for t in m.tool_calls:
            total += estimate_text(t.name) + estimate_text(t.arguments)
    for tool in req.tools or ():
        total += estimate_text(tool.name) + estimate_text(tool.description or "") + 8
        if tool.parameters:
            total += estimate_text(str(tool.parameters))
    return total


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def prompt_upper_bound(req: ChatRequest) -> int:
    """At least as many tokens as the prompt can have, for reservations: a
    byte-level BPE token covers at least one byte, so UTF-8 bytes bound the
    text; images and per-message framing get generous fixed allowances.
    Content only an Anthropic deployment reads (documents, …) counts by its
    JSON bytes."""
    total = 16 + (req.origin.uncarried_bytes if req.origin is not None else 0)
    for m in req.messages:
        total += 8
        for p in m.content:
            if isinstance(p, TextPart):
                total += _utf8_len(p.text)
            elif isinstance(p, ImagePart):
                total += 2_000
            else:
                total += 2_000
        for t in m.tool_calls:
            total += _utf8_len(t.name) + _utf8_len(t.arguments) + 8
    for tool in req.tools or ():
        total += _utf8_len(tool.name) + _utf8_len(tool.description or "") + 16
        if tool.parameters:
            total += _utf8_len(str(tool.parameters))
    if req.response_format is not None and req.response_format.schema:
        total += _utf8_len(str(req.response_format.schema))
    return total


def embedding_upper_bound(inputs: list[str] | list[list[int]]) -> int:
    return sum(_utf8_len(i) if isinstance(i, str) else len(i) for i in inputs)
