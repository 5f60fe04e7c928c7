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
