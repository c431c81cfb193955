"""Readers for the message shapes servers send where they stray from the protocol."""

from __future__ import annotations

import json
from typing import Any


def arguments_text(value: Any) -> str:
    """A tool call's arguments as JSON text: the protocol sends a string, some servers
    an object."""
    if isinstance(value, dict):
        return json.dumps(value)
    return value or "{}"


def content_text(value: Any) -> str | None:
    """A message's text: a string, or (in the newer shape) a list of content parts."""
    if isinstance(value, list):
        return "".join(part.get("text") or "" for part in value if isinstance(part, dict))
    return value


#: how chat templates mark a tool call they write as text
_CALL_TAGS = ("<tool_call>", "<|tool_call|>", "<function=", "[TOOL_CALLS]")


def tool_call_in_text(text: str | None, names: set[str]) -> str | None:
    """The tool a reply's text calls when the model wrote the call as text (a server
    whose chat template has no tool calls passes it on as an answer), or None."""
    if not text:
        return None
    stripped = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```")
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        called = data.get("name") or (data.get("function") or {}).get("name")
        if isinstance(called, str) and called in names:
            return called
    if any(tag in text for tag in _CALL_TAGS):
        return next((name for name in names if name in text), "(unknown)")
    return None
