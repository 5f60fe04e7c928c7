"""Canonical internal types: what every ingress dialect decodes into and every
provider adapter encodes from (N + M translators, not N × M)."""

from llm_gateway.types.messages import (
    ContentPart,
    ImagePart,
    Message,
    OtherPart,
    TextPart,
    ToolCall,
)
from llm_gateway.types.request import (
    ChatRequest,
    Dialect,
    EmbeddingRequest,
    Origin,
    ResponseFormat,
    Tool,
    ToolChoice,
)
from llm_gateway.types.response import (
    ChatResponse,
    Choice,
    EmbeddingResponse,
    FinishReason,
    Usage,
)
from llm_gateway.types.stream import (
    FinishDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    UsageDelta,
)

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "Choice",
    "ContentPart",
    "Dialect",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "FinishDelta",
    "FinishReason",
    "ImagePart",
    "Message",
    "Origin",
    "OtherPart",
    "ResponseFormat",
    "StreamEvent",
    "TextDelta",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "Usage",
    "UsageDelta",
]
