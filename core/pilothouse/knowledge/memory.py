"""Memory: facts kept per subject (a customer, a thread) and recalled in later runs.

Facts are written as ``memory_written`` events, so they are part of the log
like everything else (the store keeps a table of them for recall, and
``pilothouse memory`` lists and deletes them). Two ways in: a persona whose
structured output has a ``memory_field``, or a tool calling :func:`remember`
while a run with a subject executes it (the bundled ``remember`` tool does).
They come back into every later run for the same subject as a ``memory``
piece of the context window, quoted as data.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable
from typing import Any

from ..errors import ToolError

_sink: contextvars.ContextVar[Callable[[str, str], str] | None] = contextvars.ContextVar(
    "pilothouse_memory_sink", default=None
)


def remember(fact: str, channel: str = "chat") -> str:
    """Keep ``fact`` about the subject of the run whose tool call this is; return its id.

    Raise :class:`ToolError` (the model hears it) when the run has no subject.
    """
    sink = _sink.get()
    if sink is None:
        raise ToolError("this run has no subject: there is nobody to remember facts about")
    fact = " ".join(fact.split())
    if not fact:
        raise ToolError("an empty fact cannot be remembered")
    return sink(fact, channel or "chat")


def facts_in_output(output: str, field: str, default_channel: str) -> list[tuple[str, str]]:
    """(fact, channel) pairs listed under ``field`` of a JSON output (none if absent)."""
    try:
        data: Any = json.loads(output)
    except ValueError:
        return []
    items = data.get(field) if isinstance(data, dict) else None
    found = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, str) and item.strip():
            found.append((item.strip(), default_channel))
        elif isinstance(item, dict) and str(item.get("fact", "")).strip():
            found.append((str(item["fact"]).strip(), str(item.get("channel") or default_channel)))
    return found
