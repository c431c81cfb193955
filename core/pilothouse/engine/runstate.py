"""The state of runs: what a run has done so far (rebuilt from its log on resume), what
one step's conversation with its model came to, and how a run ended."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..crew import Crew
from ..events import (
    BaseEvent,
    EscalationDecided,
    EscalationRaised,
    MemoryWritten,
    ModelCalled,
    RemoteTaskStarted,
    StepFinished,
    StepStarted,
    ToolCalled,
    ToolStarted,
)
from ..model import Message, Model, ModelResponse
from ..store.base import MemoryItem
from ..tools import canonical_json
from .evidence import evidence_of


class Replaying(Protocol):
    """What a replay serves the engine from a recorded run (:mod:`pilothouse.audits.replay`)."""

    #: the run replayed (its replays log it)
    run_id: str
    #: the facts about the subject the run recalled, recalled again instead of the store's
    memory: list[MemoryItem]
    #: the run tried its personas' fallbacks (no model override): the replay stands in
    #: for each model a persona would try, so a recorded failure falls back as it did
    fallbacks: bool

    def tool_result(self, name: str, canonical_arguments: str) -> str:
        """The recorded result of a tool call (a recorded error raised as ToolError)."""

    def decision(
        self, step_id: str, kind: str, reason: str
    ) -> tuple[str, str, str, str | None] | None:
        """The recorded ``(decision, by, note, text)`` of an escalation, or None to wait."""


@dataclass
class RunResult:
    """How a run ended."""

    run_id: str
    crew: str
    status: str
    output: str | None = None
    error: str | None = None
    error_kind: str | None = None
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the run succeeded."""
        return self.status == "succeeded"


@dataclass
class StepOutcome:
    """A finished step: its output and, in a handoff flow, who gets the work next."""

    output: str
    handoff_to: str | None = None


@dataclass
class _Run:
    """The mutable state of one run (the engine itself holds none)."""

    id: str
    crew: Crew
    task: str
    model_override: str | None
    #: whom the run is about (a customer, a thread): its memory is recalled and kept
    subject: str | None = None
    memory: list[MemoryItem] = field(default_factory=list)
    seq: int = 0
    steps: int = 0
    handoffs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    seen_inputs: set[tuple[str, str]] = field(default_factory=set)
    tool_calls: dict[tuple[str, str], int] = field(default_factory=dict)
    trail: list[str] = field(default_factory=list)
    #: a step finished since the last flush
    unflushed: bool = False
    #: (tool, canonical arguments) a person approved in this run
    approved: set[tuple[str, str]] = field(default_factory=set)
    #: what the run saw, for explaining its output: (kind, ref, step_id, text)
    evidence: list[tuple[str, str, str | None, str]] = field(default_factory=list)

    #: resumed runs: finished steps by id, unfinished attempts per step id
    done: dict[str, StepFinished] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    #: resumed runs: escalations raised in unfinished steps, and those decided in the log
    prior_escalations: dict[tuple[str | None, str, str], str] = field(default_factory=dict)
    logged_decisions: set[str] = field(default_factory=set)
    #: resumed runs: tool calls unfinished steps made, by (step, tool, arguments): those
    #: that answered (their logged outcome is used, the call not sent again), and how
    #: many were sent with no answer logged (in flight when the process stopped)
    logged_calls: dict[tuple[str, str, str], list[ToolCalled]] = field(default_factory=dict)
    in_flight: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    #: resumed runs: remote work (an A2A task) a model call of an unfinished step had
    #: started and not seen answered, by (step, model): re-attached, not sent again
    remote_refs: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        """Tokens spent so far, in and out."""
        return self.input_tokens + self.output_tokens

    def restore(self, events: list[BaseEvent]) -> None:
        """Rebuild the state a run had when its last logged event was written."""
        started: Counter[str] = Counter()
        raised: dict[str, EscalationRaised] = {}
        for e in events:
            self.seq = max(self.seq, e.seq)
            self.evidence += evidence_of(e)
            if isinstance(e, StepStarted) and e.step_id is not None:
                started[e.step_id] += 1
            elif isinstance(e, StepFinished) and e.step_id is not None:
                self.done[e.step_id] = e
            elif isinstance(e, ModelCalled):
                self.input_tokens += e.usage.input_tokens
                self.output_tokens += e.usage.output_tokens
                self.cost_usd += e.cost_usd or 0.0
            elif isinstance(e, EscalationRaised):
                raised[e.escalation_id] = e
            elif isinstance(e, MemoryWritten):
                self.memory.append(MemoryItem.of(e))
            elif isinstance(e, EscalationDecided):
                self.logged_decisions.add(e.escalation_id)
                first = raised.get(e.escalation_id)
                if first is not None and first.kind == "tool_approval" and e.decision != "reject":
                    arguments = e.text if e.decision == "edit" else first.proposed
                    self.approved.add((first.evidence["tool"], canonical_json(arguments or "{}")))
        self.attempts = {s: n for s, n in started.items() if s not in self.done}
        for e in events:
            if e.step_id is None or e.step_id in self.done:
                continue
            if isinstance(e, RemoteTaskStarted):
                self.remote_refs[(e.step_id, e.model)] = e.ref
            elif isinstance(e, ModelCalled) and e.error is None:
                self.remote_refs.pop((e.step_id, e.model), None)  # it answered
        sent: dict[str, tuple[str, str, str]] = {}
        for e in events:
            if e.step_id is None or e.step_id in self.done:
                continue
            if isinstance(e, ToolStarted):
                sent[e.call_id] = key = (e.step_id, e.tool, canonical_json(e.arguments))
                self.in_flight[key] += 1
            elif isinstance(e, ToolCalled):
                key = (e.step_id, e.tool, canonical_json(e.arguments))
                self.logged_calls.setdefault(key, []).append(e)
                if sent.pop(e.call_id, None) is not None:
                    self.in_flight[key] -= 1
        for e in raised.values():
            if e.step_id not in self.done:
                self.prior_escalations[(e.step_id, e.kind, e.reason)] = e.escalation_id


@dataclass
class _Talk:
    """Where a step's conversation with its model ended."""

    models: list[Model]
    messages: list[Message]
    #: the last reply (set by the first call; None only before it)
    response: ModelResponse | None = None
    handoff: Any = None
    input_tokens: int = 0
    output_tokens: int = 0


class _SentBack(Exception):  # control flow: never leaves the engine
    """A person rejected a step's output and the crew sends it back for revision."""

    def __init__(self, note: str) -> None:
        self.note = note


def taken_over_message(run_id: str) -> str:
    """Why a run stops in this process: another took it over while the store was away."""
    return (
        f"run {run_id} was taken over by another process while this one could not reach"
        " the run store; it goes on there"
    )


def new_run_id() -> str:
    """A fresh run id: 12 random hex characters."""
    return os.urandom(6).hex()
