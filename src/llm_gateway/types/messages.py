"""Canonical conversation messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(slots=True)
class TextPart:
    text: str
    kind: Literal["text"] = "text"


@dataclass(slots=True)
class ImagePart:
    """An image given by URL: either ``data:<mime>;base64,<data>`` or http(s)."""

    url: str
    detail: str | None = None
    kind: Literal["image"] = "image"

    @property
    def is_data_url(self) -> bool:
        return self.url.startswith("data:")

    def split_data_url(self) -> tuple[str, str]:
        """Return ``(media_type, base64_data)`` of a data: URL."""
        header, _, data = self.url.partition(",")
        media_type = header[5:].split(";", 1)[0] or "application/octet-stream"
        return media_type, data


@dataclass(slots=True)
class OtherPart:
    """A content part the gateway does not model (audio, files, …), kept as
    sent so the passthrough path loses nothing; translators refuse it."""

    raw: dict[str, Any]
    kind: Literal["other"] = "other"


ContentPart = TextPart | ImagePart | OtherPart


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model produced it


@dataclass(slots=True)
class Message:
    """One turn. ``system`` covers OpenAI's system and developer roles.

    A ``tool`` message carries the result of the call named by ``tool_call_id``
    in ``content``; an ``assistant`` message may carry ``tool_calls``.
    """

    role: Role
    content: list[ContentPart] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))
