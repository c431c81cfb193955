"""A run's summary as a fold of its events, for stores that keep a summary row per run.

The row is a cache: a store rewrites it when the run's status changes and otherwise
at most every ``SUMMARY_LAG_S`` while the run works, and reads fold in the events
logged since (:meth:`RunDelta.apply`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..events import FINAL_EVENTS, LogEntry, log_entry, parse_event
from .base import RunSummary

#: how long a working run's summary row may lag its events (status changes never lag)
SUMMARY_LAG_S = 0.5


@dataclass
class RunDelta:
    """What a stretch of one run's events changes in its summary row (None: unchanged)."""

    updated: float = 0.0
    last_seq: int = 0
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    status: str | None = None
    output: str | None = None
    error: str | None = None
    error_kind: str | None = None
    persona_changed: bool = False
    persona: str | None = None
    step: str | None = None
    #: when the first of these events was logged (how long the row has lagged)
    since: float = 0.0

    def fold(self, e: LogEntry) -> None:
        """Add one event's effect on the run's summary."""
        if not self.since:
            self.since = e.ts
        self.updated, self.last_seq = e.ts, e.seq
        t = e.type
        if t == "step_started":
            self.persona_changed, self.persona = True, e.persona
            self.step = e.step_id
        elif t == "step_finished":
            self.steps += 1
        elif t == "model_call":
            self.input_tokens += e.input_tokens
            self.output_tokens += e.output_tokens
            self.cost_usd += e.cost_usd
        elif t == "run_resumed":
            self.status = "running"
        elif t in FINAL_EVENTS:
            self.status = FINAL_EVENTS[t]
            self.persona_changed, self.persona = True, None
            if t == "run_finished":
                self.output = e.event.output  # type: ignore[union-attr]
            elif t == "run_failed":
                self.error, self.error_kind = e.event.message, e.event.kind  # type: ignore[union-attr]

    def row(self, run_id: str) -> tuple[object, ...]:
        """The parameters of ``_UPDATE_RUN`` for this run."""
        return (
            self.updated, self.last_seq, self.steps, self.input_tokens, self.output_tokens,
            self.cost_usd, self.status, self.output, self.error, self.error_kind,
            self.persona_changed, self.persona, self.step, run_id,
        )  # fmt: skip

    def apply(self, summary: RunSummary) -> RunSummary:
        """``summary`` with these events folded in."""
        s = summary
        return s.model_copy(
            update={
                "updated": self.updated,
                "last_seq": self.last_seq,
                "steps": s.steps + self.steps,
                "input_tokens": s.input_tokens + self.input_tokens,
                "output_tokens": s.output_tokens + self.output_tokens,
                "cost_usd": s.cost_usd + self.cost_usd,
                "status": self.status or s.status,
                "output": s.output if self.output is None else self.output,
                "error": s.error if self.error is None else self.error,
                "error_kind": s.error_kind if self.error_kind is None else self.error_kind,
                "current_persona": self.persona if self.persona_changed else s.current_persona,
                "current_step": self.step or s.current_step,
            }
        )


def folded(rows: Iterable[tuple[str, str]]) -> dict[str, RunDelta]:
    """(run id, event JSON) rows in order, folded per run."""
    deltas: dict[str, RunDelta] = {}
    for run_id, data in rows:
        deltas.setdefault(run_id, RunDelta()).fold(log_entry(parse_event(data), data))
    return deltas
