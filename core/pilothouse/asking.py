"""A model provider or tool that needs a person mid-step asks one: the question becomes
an escalation in the inbox (kind ``input_required``), the step waits for the decision,
and the answer comes back to the caller (a remote agent's ``input-required`` task, a
tool that must confirm what it cannot guess)."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Literal

from pydantic import BaseModel

from .errors import PilothouseError


class Answer(BaseModel):
    """What a person answered to a question from a step."""

    #: approve: go on as asked; edit: ``text`` is the answer; reject: do not go on
    decision: Literal["approve", "edit", "reject"]
    text: str | None = None
    note: str = ""
    by: str = ""


#: set by the engine around a step's model calls: ``ask(question, reason) -> Answer``
_ask_sink: contextvars.ContextVar[Callable[[str, str], Awaitable[Answer]] | None] = (
    contextvars.ContextVar("pilothouse_ask_sink", default=None)
)


async def ask_person(question: str, *, reason: str) -> Answer:
    """Ask a person, from inside a step's model call, and wait for the answer. The
    question is shown whole in the inbox, the monitor and the portal; ``reason`` is the
    escalation's one line. Outside a run's step there is nobody to ask: an error."""
    ask = _ask_sink.get()
    if ask is None:
        raise PilothouseError(f"nobody to ask outside a run's step: {reason}")
    return await ask(question, reason)
