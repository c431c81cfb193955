"""Reading an OpenAI-style server-sent event stream into a reply."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio

from pilothouse import ModelError

from .shapes import content_text

#: how long to wait after ``[DONE]`` for the body to end (servers end it at once)
DRAIN_S = 0.25
#: lines past ``[DONE]`` read before giving up on the rest
DRAIN_LINES = 16


@dataclass
class StreamedReply:
    """What the chunks of a stream add up to."""

    text: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    id: str | None = None
    done: bool = False

    def add(self, chunk: dict[str, Any]) -> str:
        """Fold one chunk in; return the text it adds."""
        self.id = self.id or chunk.get("id")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        added = ""
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            added += content_text(delta.get("content")) or ""
            for call in delta.get("tool_calls") or ():
                slot = self.tool_calls.setdefault(
                    call.get("index", 0), {"id": "", "name": "", "arguments": ""}
                )
                slot["id"] = call.get("id") or slot["id"]
                function = call.get("function") or {}
                slot["name"] += function.get("name") or ""
                piece = function.get("arguments") or ""  # a fragment of the JSON text
                slot["arguments"] += piece if isinstance(piece, str) else json.dumps(piece)
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if added:
            self.text.append(added)
        return added


async def read_stream(lines: AsyncIterator[str], reply: StreamedReply, on_text: Any) -> None:
    """Consume ``data:`` lines until ``[DONE]``, then the end of the body; raise
    :class:`ModelError` on garbage or a cut."""
    async for line in lines:
        if not line.startswith("data:"):
            continue  # comments, event names, keep-alives
        data = line[5:].strip()
        if data == "[DONE]":
            reply.done = True
            await _drain(lines)
            return
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise ModelError(
                f"the stream sent a chunk that is not JSON: {data[:80]!r}", request_id=reply.id
            ) from None
        if not isinstance(chunk, dict):
            raise ModelError("the stream sent a chunk that is not an object", request_id=reply.id)
        if "error" in chunk:
            message = (chunk["error"] or {}).get("message", "unknown error")
            raise ModelError(f"the server reported an error mid-stream: {message}",
                             request_id=reply.id)  # fmt: skip
        try:
            added = reply.add(chunk)
        except (AttributeError, TypeError, ValueError) as exc:  # a shape no server should send
            raise ModelError(
                f"the stream sent a chunk pilothouse cannot read: {type(exc).__name__}: {exc}",
                request_id=reply.id,
            ) from None
        if added:
            on_text(added)
    raise ModelError("the stream ended before [DONE]: the reply was cut off", request_id=reply.id)


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read the body to its end after ``[DONE]`` (normally nothing is left but the end
    of the chunked body). A response closed before its end takes its connection with
    it, so every streamed call would pay a new connection (and TLS handshake). A
    server that keeps sending, or holds the body open, is left after a moment: the
    reply is whole either way, and only the connection is lost."""
    with anyio.move_on_after(DRAIN_S):
        try:
            read = 0
            async for _ in lines:
                read += 1
                if read > DRAIN_LINES:
                    return
        except Exception:  # a broken tail after [DONE] costs the connection, not the reply
            return
