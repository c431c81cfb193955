"""Guardrails: checks on a step's input or output that return a verdict.

``pass`` lets the text through, ``fix`` replaces it, ``flag`` asks for a
human, ``block`` stops the step.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from .model import Message, ModelResponse

#: ``ask(model, messages, response_schema=None)``: one model call inside the run
Ask = Callable[..., Awaitable["ModelResponse"]]
#: ``embed(embedder, texts)``: vectors from a registered embedder, off the event loop
Embed = Callable[[str, Sequence[str]], Awaitable[list[list[float]]]]

Action = Literal["pass", "fix", "flag", "block"]
Stage = Literal["input", "output", "retrieval"]


class Span(BaseModel):
    """A stretch of the checked text a guardrail points at: ``text[start:end]``, with
    what is wrong there (``label``). Every view marks it: reverse video in the
    terminal, ``<mark>`` on the portal."""

    start: int = Field(ge=0)
    end: int = Field(ge=0)
    label: str = ""

    @classmethod
    def around(cls, text: str, fragment: str, label: str, *, after: int = 0) -> Span | None:
        """The first occurrence of ``fragment`` in ``text`` from ``after`` on (case and
        runs of spaces ignored), or None when it is not there."""
        found = locate(text, fragment, after)
        return cls(start=found[0], end=found[1], label=label) if found else None


def locate(text: str, fragment: str, after: int = 0) -> tuple[int, int] | None:
    """Where ``fragment`` is in ``text`` (from ``after``), its words matched with any
    spacing between them and in any case; None when it is not there."""
    words = re.findall(r"\S+", fragment)
    if not words:
        return None
    found = re.compile(r"\s+".join(re.escape(w) for w in words), re.I).search(text, after)
    return (found.start(), found.end()) if found else None


class Verdict(BaseModel):
    """What a guardrail decided. ``replacement`` is required with ``fix``."""

    action: Action = "pass"
    reason: str = ""
    replacement: str | None = None
    risk: float = 0.0
    #: structured findings (scores, matched evidence), logged with the verdict
    details: dict[str, Any] = Field(default_factory=dict)
    #: where in the checked text the trouble is (offsets into it), for the views
    spans: list[Span] = Field(default_factory=list)

    @classmethod
    def ok(cls) -> Verdict:
        """A ``pass`` verdict."""
        return cls(action="pass")


@dataclass
class GuardrailContext:
    """What a guardrail may look at besides the text: the run, step and persona."""

    run_id: str
    step_id: str
    persona: str
    stage: Stage
    crew: str
    #: for output checks: what the step had to go on (passages, tool results, its input)
    evidence: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    #: ask a model (an alias or ``provider:model``) as part of the step: the call is
    #: logged as a ``model_call`` event of the step and counts against the budgets
    ask: Ask | None = None
    #: embed texts with a registered embedder (``embed("minilm", texts)``)
    embed: Embed | None = None

    async def ask_text(self, model: str, messages: list[Message], **request: Any) -> str:
        """Ask a model and return its reply's text (``""`` when it wrote none)."""
        if self.ask is None:
            raise RuntimeError("this context cannot call models")
        response = await self.ask(model, messages, **request)
        return response.text or ""


class Guardrail(abc.ABC):
    """A check. Subclass it and register it through ``register_guardrails``.

    ``check`` may be sync or async; an exception in it fails the step with the
    guardrail's plugin named in the error. A sync ``check`` runs on the event loop,
    so it must be quick; set ``blocking = True`` for one that waits on something
    (a remote service): it then runs in a thread of its own, like a sync tool.
    """

    name: str = ""
    description: str = ""
    #: run the sync ``check`` in a thread (it does blocking I/O)
    blocking: bool = False
    #: the models ``check`` asks through ``context.ask`` (aliases or
    #: ``provider:model``): resolved before a run starts, so that a misnamed one,
    #: or one without the key it needs, stops the run before it spends anything
    models: tuple[str, ...] = ()

    @abc.abstractmethod
    def check(self, text: str, context: GuardrailContext) -> Any:
        """Return a :class:`Verdict` (or an awaitable of one) for ``text``."""
