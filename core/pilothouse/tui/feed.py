"""What the monitor knows, followed incrementally from the run store (no Textual here).

:class:`Feed` reads the event log by global event id: each :meth:`Feed.poll`
asks for the events after the last one it saw, refreshes only the runs they
belong to and, when escalations moved, the inbox. A workspace with no store
yet is watched until a first run creates one. Everything here is synchronous:
the app calls it from a worker thread so the UI never waits on SQLite.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..audits.failures import FailureInfo, describe_failure
from ..errors import StoreUnavailable
from ..events import FINAL_STATUSES, UNFINISHED_STATUSES, BaseEvent
from ..settings import shown_url
from ..store.base import Escalation, RunStore, RunSummary, StoredEvent
from ..store.open import is_url, open_location

STATUSES = ("running", "waiting_for_human", "queued", "succeeded", "failed", "cancelled")
#: how many events one poll reads at most; a backlog is caught up over several polls
POLL_BATCH = 5000
#: how often the unfinished runs are read again to notice a runner that died
LEASE_CHECK_S = 5.0


@dataclass(frozen=True)
class RunFilter:
    """Which runs the fleet view shows: ``status:failed crew:support audit:no free text``."""

    status: str | None = None
    crew: str | None = None
    text: str = ""
    #: True: only the runs audits made; False: none of them; None: all runs
    audit: bool | None = None

    @classmethod
    def parse(cls, query: str) -> RunFilter:
        """Read ``status:``, ``crew:`` and ``audit:yes|no`` terms; the other words must
        all appear in the run's id, crew, input, output or error."""
        status = crew = audit = None
        words = []
        for term in query.split():
            key, _, value = term.partition(":")
            if key == "status" and value:
                status = value
            elif key == "crew" and value:
                crew = value
            elif key == "audit" and value in ("yes", "no"):
                audit = value == "yes"
            else:
                words.append(term.lower())
        return cls(status, crew, " ".join(words), audit)

    def matches(self, run: RunSummary) -> bool:
        """Whether ``run`` passes the filter."""
        if self.status and not (
            run.status.startswith(self.status) or run.shown_status.startswith(self.status)
        ):
            return False
        if self.crew and run.crew != self.crew:
            return False
        if self.audit is not None and run.audit != self.audit:
            return False
        if self.text:
            haystack = " ".join(
                (run.id, run.crew, run.input, run.output or "", run.error or "")
            ).lower()
            return all(word in haystack for word in self.text.split())
        return True


@dataclass
class FleetStats:
    """The header's numbers over a window of time."""

    window_s: float
    runs: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    escalated: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    @property
    def per_minute(self) -> float:
        """Runs started per minute in the window."""
        return self.runs / max(self.window_s / 60, 1e-9)

    def rate(self, *statuses: str) -> float | None:
        """Share of finished runs in ``statuses`` (None before any finished)."""
        finished = sum(self.counts.get(s, 0) for s in FINAL_STATUSES)
        if not finished:
            return None
        return sum(self.counts.get(s, 0) for s in statuses) / finished

    @property
    def escalation_rate(self) -> float | None:
        """Share of the window's runs that asked a person at least once."""
        return self.escalated / self.runs if self.runs else None


@dataclass
class Changes:
    """What one poll brought: the monitor redraws only what these touch."""

    runs: list[RunSummary] = field(default_factory=list)
    new_runs: list[str] = field(default_factory=list)
    events: list[StoredEvent] = field(default_factory=list)
    inbox_changed: bool = False
    #: escalations that started waiting since the last poll (the monitor rings)
    raised: list[Escalation] = field(default_factory=list)
    #: set when the store appeared (or could not be read): redraw everything
    reloaded: bool = False
    #: streamed text of the watched run's calls in flight, by step (None: no run watched)
    live: dict[str, str] | None = None
    problem: str | None = None

    def __bool__(self) -> bool:
        return bool(self.runs or self.events or self.inbox_changed or self.reloaded or self.live)


@dataclass
class Failure:
    """A failed run and why it failed: what the exceptions screen shows."""

    run: RunSummary
    info: FailureInfo = field(default_factory=FailureInfo)


@dataclass
class Batch:
    """What :meth:`Feed.fetch` read, for :meth:`Feed.apply`."""

    events: list[StoredEvent] = field(default_factory=list)
    runs: list[RunSummary] = field(default_factory=list)
    waiting: list[Escalation] | None = None
    #: set when the store was just opened
    store: RunStore | None = None
    escalated_runs: set[str] = field(default_factory=set)
    last_id: int = 0
    #: streamed text of the watched run's calls in flight, by step
    live: dict[str, str] | None = None
    problem: str | None = None
    #: when the unfinished runs' leases were read again (None: not in this batch)
    leases_at: float | None = None


class Feed:
    """The monitor's picture of a workspace's run store, kept current by :meth:`poll`."""

    def __init__(
        self,
        location: str | Path,
        *,
        max_runs: int = 2000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        #: the store's URL, or its SQLite file's path
        self.location = location if is_url(location) else Path(location)
        self.shown = shown_url(str(location)) if is_url(location) else str(location)
        self.max_runs = max_runs
        self.clock = clock
        self.store: RunStore | None = None
        self.runs: dict[str, RunSummary] = {}
        self.waiting: dict[str, Escalation] = {}
        self.escalated_runs: set[str] = set()
        self.last_id = 0
        self.problem: str | None = None
        self._closed = False
        #: the run whose streamed text :meth:`fetch` also reads (the open run view)
        self.watch: str | None = None
        self._leases_at = 0.0
        #: the runs last seen stalled (that changes with no change to the run's row)
        self._stalled: set[str] = set()

    # -- following the log -------------------------------------------------------

    def poll(self) -> Changes:
        """Read and take in what changed since the last poll."""
        return self.apply(self.fetch())

    def fetch(self) -> Batch:
        """Read what changed since the last poll, changing nothing (safe in a worker
        thread while the UI reads this feed; :meth:`apply` it on the UI thread)."""
        if self._closed:
            return Batch(problem="the monitor is closing")
        if self.store is None:
            return self._open()
        try:
            return self._read_new()
        except StoreUnavailable as exc:  # the server away, the file locked: say since when
            return Batch(problem=self.store.health.describe() or str(exc))
        except Exception as exc:  # the file went away: say so, try again
            return Batch(problem=f"cannot read the run store {self.shown}: {exc}")

    def _read_new(self) -> Batch:
        assert self.store is not None
        stored = self.store.events_since(self.last_id, limit=POLL_BATCH)
        watched = self.watch
        live = self.store.live(watched) if watched else None
        touched = {s.event.run_id for s in stored}
        # A process that dies writes no event: its runs are read again now and then
        # so that the views can tell they stalled.
        now, leases_at = self.clock(), None
        if now - self._leases_at >= LEASE_CHECK_S:
            leases_at = now
            known = list(self.runs.values())  # the UI thread may change the dict meanwhile
            touched.update(r.id for r in known if r.status in UNFINISHED_STATUSES)
        if not touched:
            return Batch(live=live)
        waiting = None
        if any(s.event.type.startswith("escalation_") for s in stored):
            waiting = self.store.escalations(status="waiting", limit=1000)
        runs = self.store.runs_by_id(sorted(touched))
        return Batch(events=stored, runs=runs, waiting=waiting, live=live, leases_at=leases_at)

    def apply(self, batch: Batch) -> Changes:
        """Take in what :meth:`fetch` read; say what changed."""
        if batch.store is not None and self._closed:  # opened as the feed closed
            batch.store.close()
            return Changes(problem="the monitor is closing")
        if batch.store is not None:
            self.store, self.runs = batch.store, {}
            self.escalated_runs, self.last_id = batch.escalated_runs, batch.last_id
        self.problem = batch.problem
        if batch.problem:
            return Changes(problem=batch.problem)
        changes = Changes(events=batch.events, reloaded=batch.store is not None, live=batch.live)
        if batch.events:
            self.last_id = batch.events[-1].id
        if batch.leases_at is not None:
            self._leases_at = batch.leases_at
        for s in batch.events:
            if s.event.type == "escalation_raised":
                self.escalated_runs.add(s.event.run_id)
        for run in batch.runs:
            known = self.runs.get(run.id)
            stalled = run.stalled
            if known is None:
                changes.new_runs.append(run.id)
            elif known == run and (run.id in self._stalled) == stalled:
                continue  # read again for its lease, and nothing changed
            if stalled:
                self._stalled.add(run.id)
            else:
                self._stalled.discard(run.id)
            self.runs[run.id] = run
            changes.runs.append(run)
        if batch.waiting is not None:
            fresh = {e.id: e for e in batch.waiting}
            if batch.store is None:  # on opening, what waits is shown, not announced
                changes.raised = [e for key, e in fresh.items() if key not in self.waiting]
            changes.inbox_changed = True
            self.waiting = fresh
        if len(self.runs) > self.max_runs:
            for run in sorted(self.runs.values(), key=_newest)[self.max_runs :]:
                del self.runs[run.id]
                self._stalled.discard(run.id)
        return changes

    def _open(self) -> Batch:
        path = self.location
        if isinstance(path, Path) and not path.parent.exists():
            return Batch(
                problem=f"workspace {path.parent} does not exist: no run has been made"
                " here yet (check --workspace). Start one and it shows here."
            )
        if isinstance(path, Path) and not path.exists():
            return Batch(
                problem=f"no run store at {path}: no run has been made in this workspace"
                " yet. Start one (pilothouse run CREW 'input', or pilothouse demo): it shows here."
            )
        store: RunStore | None = None
        try:
            store = open_location(self.location)
            # The high-water mark first: an event written meanwhile is read twice
            # (harmless), never missed.
            last_id = store.last_event_id()
            batch = Batch(
                store=store,
                runs=store.list_runs(limit=self.max_runs),
                waiting=store.escalations(status="waiting", limit=1000),
                escalated_runs={
                    e.run_id for e in store.escalations(status=None, limit=self.max_runs * 4)
                },
            )
        except Exception as exc:  # a damaged file: say so, keep watching
            if store is not None:
                store.close()
            return Batch(problem=f"cannot read the run store {self.shown}: {exc}")
        batch.last_id = last_id
        return batch

    # -- views ---------------------------------------------------------------------

    def visible(self, flt: RunFilter, limit: int = 500) -> list[RunSummary]:
        """The runs the fleet view lists, newest first."""
        return [r for r in sorted(self.runs.values(), key=_newest) if flt.matches(r)][:limit]

    def stats(self, window_s: float) -> FleetStats:
        """Counts, rates, tokens and cost of the runs created in the last ``window_s``."""
        since = self.clock() - window_s
        stats = FleetStats(window_s=window_s)
        for run in self.runs.values():
            if run.created < since or run.audit:  # as `pilothouse metrics` counts
                continue
            stats.runs += 1
            stats.counts[run.status] = stats.counts.get(run.status, 0) + 1
            stats.escalated += run.id in self.escalated_runs
            stats.tokens += run.input_tokens + run.output_tokens
            stats.cost_usd += run.cost_usd
        return stats

    def failures(self) -> list[RunSummary]:
        """Failed runs, newest first."""
        return sorted((r for r in self.runs.values() if r.status == "failed"), key=_newest)

    def inbox(self) -> list[Escalation]:
        """Waiting escalations, the riskiest and oldest first."""
        return sorted(self.waiting.values(), key=lambda e: (-e.risk, e.created))

    # -- reads and writes on demand (from a worker thread) --------------------------------

    def run_events(self, run_id: str, after_seq: int = 0) -> list[BaseEvent]:
        """One run's events (the run view loads them once, then follows :meth:`poll`)."""
        return self.store.events(run_id, after_seq=after_seq) if self.store else []

    def failure(self, run_id: str) -> Failure:
        """The exception, plugin, step, traceback and limit hits behind a failed run."""
        assert self.store is not None
        run = self.runs.get(run_id) or self.store.get_run(run_id)
        return Failure(run, describe_failure(self.store.events(run_id)) or FailureInfo())

    def decide(
        self, escalation_id: str, decision: str, *, by: str, note: str = "", text: str | None = None
    ) -> Escalation:
        """Write a decision the runner executing the run picks up (see ``pilothouse approve``)."""
        assert self.store is not None
        decided = self.store.decide(escalation_id, decision, by=by, note=note, text=text)
        return decided

    def close(self) -> None:
        """Release the store, for good: a fetch after this opens nothing (a poll still on
        its way when the monitor closes would otherwise open a store nobody closes)."""
        self._closed = True
        if self.store is not None:
            self.store.close()
            self.store = None


def _newest(run: RunSummary) -> tuple[float, str]:
    return (-run.created, run.id)
