"""The run store: where the event log lives, behind a small interface.

:class:`RunStore` is what the engine writes to and what the CLI, the monitor
and the portal read from. SQLite (:mod:`pilothouse.store.sqlite`) is the
embedded default; another database can implement the same methods.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field, computed_field

from ..events import FINAL_STATUSES, UNFINISHED_STATUSES, BaseEvent, LogEntry, MemoryWritten
from .health import StoreHealth
from .lease import lease_alive

#: the subject prefix of the runs an audit makes
AUDIT_SUBJECT = "audit:"


class RunSummary(BaseModel):
    """One run as listed: a fold of its events, exact whenever it is read (the stored row
    may lag a working run's last events by a moment; reads fold those in)."""

    id: str
    crew: str
    status: str
    input: str
    output: str | None = None
    error: str | None = None
    error_kind: str | None = None
    created: float
    updated: float
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    current_persona: str | None = None
    current_step: str | None = None
    last_seq: int = 0
    #: what the run is about (``--subject``); audits' runs have ``audit:<kind>:...``
    subject: str | None = None
    #: the process executing the run (``host:pid:token``) and when it last said so
    owner: str | None = None
    heartbeat: float | None = None
    #: the run this one replays (``pilothouse replay``)
    replay_of: str | None = None

    @property
    def audit(self) -> bool:
        """The run checks a crew rather than doing the fleet's work: an audit made it
        (a bias probe, an adversarial suite), or it is a replay."""
        return self.check is not None

    @property
    def check(self) -> str | None:
        """What the run checks a crew for, as views mark it: ``replay``, ``audit``, or
        None for the fleet's own work."""
        if self.replay_of is not None:
            return "replay"
        return "audit" if (self.subject or "").startswith(AUDIT_SUBJECT) else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def stalled(self) -> bool:
        """Unfinished, and no process executes it any more (it died, or a worker
        stopped): a worker or ``pilothouse resume`` must take it over."""
        return self.status in UNFINISHED_STATUSES and not lease_alive(
            self.owner, self.heartbeat, time.time()
        )

    @property
    def finished(self) -> bool:
        """The run has ended: succeeded, failed or cancelled."""
        return self.status in FINAL_STATUSES

    @property
    def shown_status(self) -> str:
        """The status as views show it: ``stalled`` for a run no process executes."""
        return "stalled" if self.stalled else self.status


class Escalation(BaseModel):
    """A paused step as the inbox shows it, with the decision once there is one."""

    id: str
    run_id: str
    crew: str = ""
    step_id: str | None = None
    persona: str
    kind: str
    reason: str
    risk: float = 0.0
    evidence: dict[str, Any] = Field(default_factory=dict)
    proposed: str | None = None
    created: float
    #: waiting, approve, edit or reject; withdrawn when the run ended first (``note`` says how)
    status: str = "waiting"
    decided_by: str | None = None
    decided_at: float | None = None
    note: str = ""
    text: str | None = None


class MemoryItem(BaseModel):
    """One fact about a subject, where it came from and when."""

    id: str
    subject: str
    channel: str
    fact: str
    run_id: str
    step_id: str | None = None
    persona: str = ""
    created: float

    @classmethod
    def of(cls, event: MemoryWritten) -> MemoryItem:
        """The fact a ``memory_written`` event kept."""
        return cls(id=event.memory_id, subject=event.subject, channel=event.channel,
                   fact=event.fact, run_id=event.run_id, step_id=event.step_id,
                   persona=event.persona, created=event.ts)  # fmt: skip


class AuditRecord(BaseModel):
    """An audit's report as the run store keeps it (bias probe, adversarial suite...).

    ``ok`` says the audit found nothing (no significant gap, no payload got
    past); ``summary`` is one line for lists; ``report`` is the whole report;
    ``run_ids`` are the runs the audit made, each in the log like any run.
    """

    id: str
    kind: str
    crew: str
    created: float
    ok: bool
    summary: str
    report: dict[str, Any] = Field(default_factory=dict)
    run_ids: list[str] = Field(default_factory=list)


class StoredEvent(BaseModel):
    """An event with the store's global, increasing ``id`` (readers resume from it)."""

    id: int
    event: BaseEvent


class Listener(abc.ABC):
    """News from other processes sharing a store, as they happen: what a process that
    waits for decisions or cancel requests (or follows the log) listens to instead of
    asking the store again and again."""

    #: a decision was recorded, a cancel was requested, events were committed
    CHANNELS = ("decisions", "cancels", "events")

    @abc.abstractmethod
    async def wait(self, timeout: float) -> set[str]:
        """The channels that had news within ``timeout`` seconds (empty: none came).
        Raise :class:`~pilothouse.errors.StoreError` when the store cannot be heard."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop listening."""


class RunStore(abc.ABC):
    """Append-only event log plus a per-run summary. Methods are synchronous and
    thread-safe, but :meth:`commit`, the engine's write path, which the async engine
    awaits through :class:`~pilothouse.store.eventlog.EventLog`."""

    location: str = ""
    #: whether the store answers, as this handle last found it (an implementation sets
    #: its own in ``__init__``; views say "run store unreachable since ..." from it)
    health: StoreHealth

    @abc.abstractmethod
    def write(self, entries: Sequence[LogEntry]) -> None:
        """Append events (as :func:`~pilothouse.events.log_entry` gives them) atomically:
        all are stored or none."""

    def taken_over(self, run_id: str) -> bool:
        """Whether another process took the run over while this one could not reach the
        store: its events are no longer written here, and this process must stop
        executing it (the default: never)."""
        return False

    async def commit(self, entries: Sequence[LogEntry]) -> None:
        """The engine's write path: commit ``entries`` in one transaction and return
        once they are durable; raise :class:`~pilothouse.errors.StoreError` and keep
        none of them when that fails.

        A batch holds the events of one or more steps, of one run or of many (group
        commit); a run's events come in order, and the event log never has two
        commits in flight. It must not hold the event loop for a round trip: a store
        on the network awaits its driver here, and it completes or fails as a whole
        when the awaiting task is cancelled (shield the round trip). The default
        calls :meth:`write` on the event loop, for an embedded database whose commit
        takes tens of microseconds.
        """
        self.write(entries)

    @abc.abstractmethod
    def memories(self, subject: str | None = None, *, limit: int = 200) -> list[MemoryItem]:
        """The newest ``limit`` facts kept about ``subject`` (every subject when None),
        oldest first (a long-lived subject's recent facts are never crowded out).

        They come from ``memory_written`` events, in the same transaction."""

    @abc.abstractmethod
    def memories_by_id(self, ids: Sequence[str]) -> list[MemoryItem]:
        """The facts with these ids, in that order, forgotten ones included (from the
        events that kept them): what a run recalled, for its resume and its replay."""

    @abc.abstractmethod
    def forget(self, *, memory_id: str | None = None, subject: str | None = None) -> int:
        """Delete one fact by id (or unique prefix), or every fact of a subject;
        return how many. The events that wrote them stay in the log."""

    @abc.abstractmethod
    def add_audit(self, record: AuditRecord) -> None:
        """Keep an audit's report."""

    @abc.abstractmethod
    def audits(
        self, *, kind: str | None = None, crew: str | None = None, limit: int = 1000
    ) -> list[AuditRecord]:
        """Audit reports, the newest first."""

    @abc.abstractmethod
    def get_audit(self, audit_id: str) -> AuditRecord:
        """One audit by id or unique prefix; raise :class:`~pilothouse.errors.NotFound`."""

    @abc.abstractmethod
    def put_live(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Record ``(run_id, step_id, text)``: what a model call in flight has streamed.

        Transient, not part of the event log: the row goes when the call's
        ``model_call`` event or the run's end is written."""

    @abc.abstractmethod
    def live(self, run_id: str) -> dict[str, str]:
        """Streamed text of the run's calls in flight, by step id."""

    @abc.abstractmethod
    def list_runs(
        self, *, status: str | None = None, crew: str | None = None, limit: int = 100
    ) -> list[RunSummary]:
        """Runs, newest first, optionally filtered."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunSummary:
        """One run by id or unique id prefix; raise :class:`~pilothouse.errors.NotFound`."""

    @abc.abstractmethod
    def runs_by_id(self, ids: Sequence[str]) -> list[RunSummary]:
        """The runs among ``ids`` that exist (how readers refresh the runs that changed)."""

    @abc.abstractmethod
    def last_event_id(self) -> int:
        """The global id of the newest event (0 when there is none)."""

    @abc.abstractmethod
    def events(self, run_id: str, *, after_seq: int = 0) -> list[BaseEvent]:
        """The events of one run in order, those after ``after_seq`` only."""

    @abc.abstractmethod
    def events_since(self, after_id: int = 0, *, limit: int = 1000) -> list[StoredEvent]:
        """Events of every run after the global id ``after_id``: how readers follow the log."""

    @abc.abstractmethod
    def escalations(
        self, *, status: str | None = "waiting", run_id: str | None = None, limit: int = 100
    ) -> list[Escalation]:
        """Escalations, the riskiest and newest first (default: those waiting)."""

    @abc.abstractmethod
    def get_escalation(self, escalation_id: str) -> Escalation:
        """One escalation by id or unique prefix; raise :class:`~pilothouse.errors.NotFound`."""

    @abc.abstractmethod
    def decide(
        self,
        escalation_id: str,
        decision: str,
        *,
        by: str,
        note: str = "",
        text: str | None = None,
    ) -> Escalation:
        """Record a decision if the escalation still waits: of two deciders exactly one wins.

        Raise :class:`~pilothouse.errors.DecisionError` when it was already
        decided or its run no longer waits.
        """

    @abc.abstractmethod
    def request_cancel(self, run_id: str) -> RunSummary:
        """Ask for a run to be cancelled: a queued run is cancelled at once (logged),
        a running or waiting one by the process executing it (or on resume)."""

    @abc.abstractmethod
    def claim_queued(self, limit: int) -> list[RunSummary]:
        """Atomically take up to ``limit`` queued runs (status becomes ``running``)."""

    @abc.abstractmethod
    def take_over(self, run_id: str) -> None:
        """Become the run's owner; raise :class:`~pilothouse.errors.RunBusy` if a live
        process executes it."""

    @abc.abstractmethod
    def orphaned(self) -> list[str]:
        """Unfinished runs whose process is gone (what ``resume --all`` continues)."""

    @abc.abstractmethod
    def heartbeat(self) -> None:
        """Renew the lease on the runs this owner executes."""

    @abc.abstractmethod
    def cancel_requested(self, ids: Sequence[str]) -> list[str]:
        """Those of ``ids`` whose cancellation was requested."""

    @abc.abstractmethod
    def decided_among(self, ids: Sequence[str]) -> list[Escalation]:
        """Those of ``ids`` that have a decision (how a runner learns of decisions)."""

    def listener(self) -> Listener | None:
        """A :class:`Listener` for news from other processes, or None when the store
        has no way to announce it (readers then ask again every fraction of a second)."""
        return None

    @abc.abstractmethod
    def metric_facts(
        self,
        fields: Sequence[tuple[str, bool]],
        *,
        crew: str | None = None,
        since: float | None = None,
        audits: bool = False,
    ) -> tuple[list[tuple], list[tuple]]:
        """What the LLM-ops metrics add up, read in two queries rather than event by event.

        Returns the runs created since ``since`` (of ``crew``; the runs audits and
        replays made only with ``audits``) as ``(id, crew, status, created)``, and
        their step-start, model-call and escalation events in log order as
        ``(run_id, step_id, type, *fields)``: each of ``fields`` is a dotted path into
        the event's JSON and whether it is a number (None where the event has none).
        """

    @abc.abstractmethod
    def prune(self, before: float, *, dry_run: bool = False) -> tuple[int, int]:
        """Delete the runs that ended before ``before`` (a time), with their events and
        escalations, at once; return (runs, events). Unfinished runs are never pruned;
        facts kept about subjects stay."""

    @abc.abstractmethod
    def size(self) -> int:
        """Bytes the store takes on disk."""

    @abc.abstractmethod
    def vacuum(self) -> tuple[int, int]:
        """Give the space of deleted rows back; return the size before and after."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's resources."""
