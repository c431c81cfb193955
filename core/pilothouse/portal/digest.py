"""What the portal's overview pages need from one run, kept between builds.

Reading every event of every run on each build would make a build cost grow
with the whole history. A :class:`RunDigest` is made when a run's page is
written and saved with the build state; the home, index, crew, persona,
escalation and failure pages are made from digests alone.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ..audits.failures import FailureInfo, describe_failure
from ..events import BaseEvent
from ..store.base import RunSummary


class StepDigest(BaseModel):
    """One step as the persona pages list it."""

    step_id: str
    persona: str
    model: str = ""
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    flags: int = 0
    output: str = ""


class EscalationDigest(BaseModel):
    """One escalation and what was decided."""

    escalation_id: str
    step_id: str | None = None
    persona: str
    kind: str
    reason: str
    risk: float = 0.0
    raised: float
    decision: str | None = None
    by: str | None = None
    decided_at: float | None = None
    note: str = ""


class RunDigest(BaseModel):
    """A run's summary plus its steps, escalations and failure."""

    run: RunSummary
    steps: list[StepDigest] = Field(default_factory=list)
    escalations: list[EscalationDigest] = Field(default_factory=list)
    failure: FailureInfo | None = None
    model_errors: int = 0


def digest(run: RunSummary, events: list[BaseEvent]) -> RunDigest:
    """Fold a run's events into its digest."""
    d = RunDigest(run=run)
    steps: dict[str, StepDigest] = {}
    escalations: dict[str, EscalationDigest] = {}
    for event in events:
        e: Any = event
        step = steps.get(event.step_id or "")
        if event.type == "step_started":
            steps[e.step_id] = StepDigest(step_id=e.step_id, persona=e.persona, model=e.model)
        elif event.type == "model_call" and step is not None:
            step.calls += 1
            step.tokens += e.usage.input_tokens + e.usage.output_tokens
            step.cost_usd += e.cost_usd or 0.0
            step.latency_ms += e.latency_ms
            d.model_errors += bool(e.error)
        elif event.type == "guardrail" and step is not None and e.action in ("flag", "block"):
            step.flags += 1
        elif event.type == "step_finished" and step is not None:
            step.output = e.output[:300]
        elif event.type == "escalation_raised":
            escalations[e.escalation_id] = EscalationDigest(
                escalation_id=e.escalation_id,
                step_id=e.step_id,
                persona=e.persona,
                kind=e.kind,
                reason=e.reason,
                risk=e.risk,
                raised=e.ts,
            )
        elif event.type == "escalation_decided" and e.escalation_id in escalations:
            escalations[e.escalation_id] = escalations[e.escalation_id].model_copy(
                update={
                    "decision": e.decision,
                    "by": e.by,
                    "decided_at": e.decided_at,
                    "note": e.note,
                }
            )
    failure = describe_failure(events)
    # the overview pages need no traceback: the run page has it
    d.failure = failure.model_copy(update={"traceback": ""}) if failure else None
    d.steps = list(steps.values())
    d.escalations = list(escalations.values())
    return d
