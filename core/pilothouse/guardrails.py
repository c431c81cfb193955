"""Guardrails: checks on a step's input or output that return a verdict.

``pass`` lets the text through, ``fix`` replaces it, ``flag`` asks for a
human, ``block`` stops the step.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

Action = Literal["pass", "fix", "flag", "block"]
Stage = Literal["input", "output", "retrieval"]


class Verdict(BaseModel):
    """What a guardrail decided. ``replacement`` is required with ``fix``."""

    action: Action = "pass"
    reason: str = ""
    replacement: str | None = None
    risk: float = 0.0
    #: structured findings (scores, matched evidence), logged with the verdict
    details: dict[str, Any] = Field(default_factory=dict)

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


class Guardrail(abc.ABC):
    """A check. Subclass it and register it through ``register_guardrails``.

    ``check`` may be sync or async; an exception in it fails the step with the
    guardrail's plugin named in the error.
    """

    name: str = ""
    description: str = ""

    @abc.abstractmethod
    def check(self, text: str, context: GuardrailContext) -> Any:
        """Return a :class:`Verdict` (or an awaitable of one) for ``text``."""
