"""Cache entries and their two shapes on the wire.

An entry is always an OpenAI response body (``chat.completion`` or an
embeddings list), the deployment that produced it and its usage. A streamed
answer is assembled into that body once it has ended properly; a streamed
request that hits an entry gets it back as ``chat.completion.chunk`` events
(role, content, tool calls, finish reason, and usage when asked for), which
the SSE layer frames exactly as it frames a live stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from llm_gateway.types import FinishDelta, StreamEvent, TextDelta, ToolCallDelta, Usage
from llm_gateway.wire.answer import Piece
from llm_gateway.wire.openai_chat.encode import encode_usage


@dataclass(slots=True, frozen=True)
class Entry:
    body: bytes
    deployment: str
    usage: Usage

    def dumps(self) -> bytes:
        u = self.usage
        head = orjson.dumps({"d": self.deployment, "u": [u.input_tokens, u.output_tokens,
                                                          u.cached_input_tokens, u.reasoning_tokens]})
        return head + b"\n" + self.body

    @classmethod
    def loads(cls, data: bytes) -> Entry:
        head, _, body = data.partition(b"\n")
        meta = orjson.loads(head)
        return cls(body, str(meta["d"]), Usage(*(int(n) for n in meta["u"])))


def replay_chunks(entry: Entry, include_usage: bool) -> list[Piece]:
    """A stored ``chat.completion`` as the chunks a live stream would send."""
    resp = orjson.loads(entry.body)
    head: dict[str, Any] = {"id": resp.get("id"), "object": "chat.completion.chunk",
                            "created": resp.get("created"), "model": resp.get("model")}
    if resp.get("system_fingerprint"):
        head["system_fingerprint"] = resp["system_fingerprint"]

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> Piece:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return Piece(orjson.dumps({**head, "choices": [choice]}), "openai.chat")

    chunks: list[Piece] = []
    for choice in resp.get("choices") or []:
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        content = message.get("content")
        tool_calls = message.get("tool_calls") or []
        chunks.append(chunk(index, {"role": "assistant", "content": "" if content is not None or not tool_calls
                                    else None}))
        if content:
            chunks.append(chunk(index, {"content": content}))
        if message.get("refusal"):
            chunks.append(chunk(index, {"refusal": message["refusal"]}))
        for i, call in enumerate(tool_calls):
            fn = call.get("function") or {}
            chunks.append(chunk(index, {"tool_calls": [{
                "index": i, "id": call.get("id"), "type": "function",
                "function": {"name": fn.get("name"), "arguments": fn.get("arguments", "")},
            }]}))
        chunks.append(chunk(index, {}, choice.get("finish_reason") or "stop"))
    if include_usage and resp.get("usage") is not None:
        chunks.append(Piece(orjson.dumps({**head, "choices": [], "usage": resp["usage"]}), "openai.chat"))
    return chunks


@dataclass(slots=True)
class _Choice:
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tools: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish: str | None = None


class StreamAssembler:
    """Rebuilds the ``chat.completion`` a stream amounted to, from OpenAI
    chunks (passthrough) or canonical events, to fill the cache."""

    __slots__ = ("_choices", "_head", "broken")

    def __init__(self, id: str, model: str, created: int) -> None:
        self._head: dict[str, Any] = {"id": id, "created": created, "model": model}
        self._choices: dict[int, _Choice] = {}
        self.broken = False  # something arrived that cannot be reassembled

    def _choice(self, index: int) -> _Choice:
        choice = self._choices.get(index)
        if choice is None:
            choice = self._choices[index] = _Choice()
        return choice

    def feed(self, piece: Piece) -> None:
        if piece.dialect == "openai.chat":
            if piece.raw is not None:
                self._feed_raw(piece.raw)
            return
        for event in piece.events:
            self._feed(event)

    def _feed(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta):
            self._choice(event.index).content.append(event.text)
        elif isinstance(event, ToolCallDelta):
            self._tool(event.index, event.tool_index, event.id, event.name, event.arguments)
        elif isinstance(event, FinishDelta):
            self._choice(event.index).finish = event.reason

    def _tool(self, index: int, tool_index: int, id: str | None, name: str | None, arguments: str) -> None:
        tool = self._choice(index).tools.setdefault(tool_index, {"id": None, "name": None, "arguments": []})
        if id:
            tool["id"] = id
        if name:
            tool["name"] = name
        if arguments:
            tool["arguments"].append(arguments)

    def _feed_raw(self, data: bytes) -> None:
        try:
            chunk = orjson.loads(data)
            for key in ("id", "created", "model", "system_fingerprint"):
                if chunk.get(key) is not None:
                    self._head[key] = chunk[key]
            for c in chunk.get("choices") or []:
                index = int(c.get("index", 0))
                choice = self._choice(index)
                delta = c.get("delta") or {}
                if delta.get("content"):
                    choice.content.append(delta["content"])
                if delta.get("refusal"):
                    choice.refusal.append(delta["refusal"])
                for t in delta.get("tool_calls") or []:
                    fn = t.get("function") or {}
                    self._tool(index, int(t.get("index", 0)), t.get("id"), fn.get("name"), fn.get("arguments") or "")
                if c.get("finish_reason"):
                    choice.finish = c["finish_reason"]
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            self.broken = True

    def entry(self, deployment: str, usage: Usage) -> Entry | None:
        """The assembled answer, or ``None`` when the stream did not finish
        every choice (cut off) or could not be understood."""
        if self.broken or not self._choices or any(c.finish is None for c in self._choices.values()):
            return None
        choices = []
        for index in sorted(self._choices):
            c = self._choices[index]
            message: dict[str, Any] = {"role": "assistant", "content": "".join(c.content) or None,
                                       "refusal": "".join(c.refusal) or None}
            if c.tools:
                message["tool_calls"] = [
                    {"id": t["id"], "type": "function",
                     "function": {"name": t["name"], "arguments": "".join(t["arguments"])}}
                    for _, t in sorted(c.tools.items())
                ]
            elif message["content"] is None:
                message["content"] = ""
            choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": c.finish})
        body = {**self._head, "object": "chat.completion", "choices": choices, "usage": encode_usage(usage)}
        return Entry(orjson.dumps(body), deployment, usage)
