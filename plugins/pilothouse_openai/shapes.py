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
