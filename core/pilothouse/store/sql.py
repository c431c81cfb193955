"""What the run store does in SQL, for every SQL backend: SQLite (:mod:`.sqlite`) and
PostgreSQL (:mod:`.postgres`) differ only in how they connect, lock and migrate, and
in the few statements each says its own way (a backend's class attributes)."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from ..errors import DecisionError, RunBusy, StoreError, StoreUnavailable
from ..events import (
    FINAL_EVENTS,
    FINAL_STATUSES,
    BaseEvent,
    LogEntry,
    RunCancelled,
    log_entry,
)
from . import summaries
from .base import (
    AuditRecord,
    Escalation,
    RunStore,
    RunSummary,
)
from .health import StoreHealth
from .lease import lease_alive
from .sql_reads import (
    AUDIT_COLUMNS,
    SQLReads,
)
from .summaries import RunDelta, folded

log = logging.getLogger("pilothouse.store")

#: a run's row as it starts; a queued run keeps its number when it starts
START_RUN = """
INSERT INTO runs
    (id, crew, status, input, created, updated, last_seq, owner, heartbeat, subject,
     replay_of{number})
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?{next_number})
ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated = excluded.updated,
    last_seq = excluded.last_seq, owner = excluded.owner, heartbeat = excluded.heartbeat
"""
_INSERT_EVENT = """
INSERT INTO events (run_no, run_id, seq, type, step_id, ts, data) VALUES (?, ?, ?, ?, ?, ?, ?)
"""
#: the same, when a retried write may find them there already (a commit whose answer
#: was lost with the connection); events are keyed by run and sequence number
_INSERT_EVENT_AGAIN = _INSERT_EVENT.rstrip() + " ON CONFLICT DO NOTHING\n"
#: the event types a write does more with than add them to their run's row
_READ_WHOLE = frozenset(
    {"run_started", "run_queued", "run_suspended", "memory_written", "escalation_raised",
     "escalation_decided", *FINAL_EVENTS}
)  # fmt: skip
#: how many run numbers a store handle keeps at most (its own runs forget theirs as
#: they end)
MAX_KEPT_NUMBERS = 100_000
_INSERT_ESCALATION = """
INSERT INTO escalations
    (id, run_id, crew, step_id, persona, kind, reason, risk, evidence, proposed, created)
VALUES (?, ?, COALESCE((SELECT crew FROM runs WHERE id = ?), ''), ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_ESCALATION_AGAIN = _INSERT_ESCALATION.rstrip() + " ON CONFLICT DO NOTHING\n"
#: a summary row made again from all of its run's events (see ``_rebuild_row``)
_RESET_ROW = """
UPDATE runs SET steps = 0, input_tokens = 0, output_tokens = 0, cost_usd = 0, last_seq = 0
WHERE id = ?
"""
# A run waits for a human while any of its escalations waits.
_RUN_WAITING = """
UPDATE runs SET status = CASE
    WHEN EXISTS (SELECT 1 FROM escalations WHERE run_id = ? AND status = 'waiting')
    THEN 'waiting_for_human' ELSE 'running' END
WHERE id = ? AND status IN ('running', 'waiting_for_human')
"""

# Nobody can decide for a run that has ended: its waiting escalations leave the inbox.
_WITHDRAW_ESCALATIONS = """
UPDATE escalations SET status = 'withdrawn', decided_at = ?, note = ?
WHERE run_id = ? AND status = 'waiting'
"""


class _TakenOver(Exception):
    """A write found runs of its batch held by another live process (run id -> owner)."""

    def __init__(self, runs: dict[str, str]) -> None:
        super().__init__(", ".join(runs))
        self.runs = runs


def _escalation_row(e: BaseEvent) -> tuple[object, ...]:
    return (
        e.escalation_id, e.run_id, e.run_id, e.step_id, e.persona, e.kind,  # type: ignore[attr-defined]
        e.reason, e.risk, json.dumps(e.evidence), e.proposed, e.ts,  # type: ignore[attr-defined]
    )  # fmt: skip


_UPDATE_RUN = """
UPDATE runs SET
    updated = ?, last_seq = ?, steps = steps + ?, input_tokens = input_tokens + ?,
    output_tokens = output_tokens + ?, cost_usd = cost_usd + ?,
    status = COALESCE(?, status), output = COALESCE(?, output), error = COALESCE(?, error),
    error_kind = COALESCE(?, error_kind),
    current_persona = CASE WHEN ? THEN ? ELSE current_persona END,
    current_step = COALESCE(?, current_step)
WHERE id = ?
"""


class SQLRunStore(SQLReads, RunStore):
    """A :class:`RunStore` over one SQL connection: a backend opens the connection
    (``_db``, with ``execute`` and ``executemany`` taking ``?`` placeholders) and says
    how its dialect differs in the class attributes below."""

    #: the connection (its ``execute``, ``executemany``, ``rollback`` and ``close``)
    _db: Any
    #: a commit's answer can be lost with the connection (a server on the network): a
    #: write that failed there may have been applied, and its retry must not apply it twice
    _unsure_commits: ClassVar[bool] = False
    #: how a write transaction starts (SQLite takes the write lock at once)
    _begin = "BEGIN"
    #: a run's row as it starts (:data:`START_RUN` with the backend's way to number runs)
    _start_run = ""
    #: SQL for the number of a run inserted now ("": the table numbers it itself)
    _next_number = ""
    #: what locks the rows a read-then-write transaction reads (PostgreSQL: FOR UPDATE)
    _for_update = ""
    #: how workers claiming queued runs at once pass over each other's (SKIP LOCKED)
    _skip_locked = ""

    def __init__(self, location: str, *, owner: str | None = None) -> None:
        #: where the store is, as messages name it (a path, a URL without its password)
        self.location = location
        #: the lease holder written with the runs this handle starts (a runner's id)
        self.owner = owner
        self._lock = threading.Lock()
        self.health = StoreHealth(location)
        #: the last transaction's COMMIT failed (see :meth:`_transaction`)
        self._commit_unanswered = False
        #: the store was unreachable since the last write: the next one fences (see write)
        self._fence = False
        #: runs another process took over while this one could not reach the store
        self._lost: set[str] = set()
        #: runs whose last write may or may not have been applied (its COMMIT's answer was
        #: lost): the next write that succeeds inserts what is not there yet and makes
        #: their summary rows again from their events
        self._unsure: set[str] = set()
        #: (run, step) of the live-text rows this handle wrote and has not deleted yet
        self._live: set[tuple[str, str]] = set()
        #: the runs whose summary row lags their events, and by what
        self._behind: dict[str, RunDelta] = {}
        #: the run number of each run at work (run id -> runs.no)
        self._numbers: dict[str, int] = {}
        #: the runs this handle started that have raised no escalation since: when one
        #: stops, none of its escalations can be waiting (only a run's executor raises
        #: them) and no other handle streamed text for it, so the statements that clear
        #: those need not run
        self._clean: set[str] = set()

    def _announce(self, channel: str) -> None:
        """Tell listening processes that ``channel`` has news, with the current
        transaction (the caller holds the lock; nothing where the backend cannot)."""

    def _before_write(self) -> None:
        """Called before each write (SQLite starts its checkpointer on the first)."""

    def _after_commit(self, data_bytes: int) -> None:
        """Called after each committed write of ``data_bytes`` of events, in its lock."""

    def write(self, entries: Sequence[LogEntry]) -> None:
        """Append events in one transaction, with the summary rows that are due.

        After an outage, the first write also renews this owner's leases and checks
        that no other process took one of the batch's runs over meanwhile (its lease
        looked dead while this process could not reach the store): such a run's events
        are not written, now or later (:meth:`taken_over`), and it goes on there.
        """
        while True:
            if self._lost:
                entries = [e for e in entries if e.run_id not in self._lost]
            if not entries:
                return
            try:
                self._write(entries)
                return
            except _TakenOver as exc:
                self._lost.update(exc.runs)
                for run_id in exc.runs:  # what this handle knew of them is its new owner's now
                    self._behind.pop(run_id, None)
                    self._numbers.pop(run_id, None)
                    self._unsure.discard(run_id)
                    self._clean.discard(run_id)
                for run_id, owner in sorted(exc.runs.items()):
                    log.warning(
                        "run %s was taken over by %s while %s could not reach the run"
                        " store: its events from here are not written, it goes on there",
                        run_id, owner, self.owner,
                    )  # fmt: skip

    def taken_over(self, run_id: str) -> bool:
        """Whether another process took the run over while this one could not reach the
        store (this process must stop executing it)."""
        return run_id in self._lost

    def _write(self, entries: Sequence[LogEntry]) -> None:
        """One attempt of :meth:`write`.

        A run's summary row is rewritten when its status changes and otherwise at
        most every ``SUMMARY_LAG_S`` while it works: the row is a cache of the events
        (one more dirty page per commit, for every run in it, was the larger part of
        a step's commit). Reads fold in the events logged since (:meth:`_caught_up`).
        """
        if not entries:
            return
        started = []
        raised = []
        escalating: set[str] = set()
        deltas: dict[str, RunDelta] = {}
        settled = []  # (run_id, step_id) whose streamed text is now a logged call
        ended = []
        withdrawn = []  # (ts, note, run_id): the run ended while a person had yet to decide
        remembered = []
        released = []  # (run_id,): suspended by a process that stops; any may resume it
        data_bytes = 0
        live = self._live
        for entry in entries:
            t = entry.type
            data_bytes += len(entry.data)
            if t not in _READ_WHOLE:  # most of a step's events: they only add to the row
                if t == "model_call" and live:
                    key = (entry.run_id, entry.step_id or "")
                    if key in live:
                        settled.append(key)
            elif t in ("run_started", "run_queued"):
                event: Any = entry.event  # the typed event rides along for these types
                status = "running" if t == "run_started" else "queued"
                owner = self.owner if status == "running" else None
                started.append(
                    (
                        event.run_id,
                        event.crew,
                        status,
                        event.input,
                        event.ts,
                        event.ts,
                        event.seq,
                        owner,
                        time.time(),
                        event.subject,
                        getattr(event, "replay_of", None),  # a queued run replays nothing
                    )
                )
                continue
            elif t in FINAL_EVENTS:
                ended.append((entry.run_id,))
                if entry.run_id not in self._clean or entry.run_id in escalating:
                    note = f"run {entry.run_id} {FINAL_EVENTS[t]} before anyone decided"
                    withdrawn.append((entry.ts, note, entry.run_id))
            elif t == "run_suspended":
                released.append((entry.run_id,))
            elif t == "memory_written":
                e = entry.event
                remembered.append((e.memory_id, e.subject, e.channel, e.fact, e.run_id,
                                   e.step_id, e.persona, e.ts))  # fmt: skip
            elif t in ("escalation_raised", "escalation_decided"):
                escalating.add(entry.run_id)
                if t == "escalation_raised":
                    raised.append(_escalation_row(entry.event))
            delta = deltas.get(entry.run_id)
            if delta is None:
                # a copy of what the row already lags: a failed write changes nothing
                earlier = self._behind.get(entry.run_id)
                delta = RunDelta(**vars(earlier)) if earlier is not None else RunDelta()
                deltas[entry.run_id] = delta
            delta.fold(entry)
        behind, due = self._due(deltas, escalating)
        # the text their calls were streaming will not go on
        stopped = ended + released
        unstreamed = [r for r in stopped if r[0] not in self._clean
                      or any(key[0] == r[0] for key in live)]  # fmt: skip
        self._before_write()
        db = self._db
        with self._lock:
            unsure = self._unsure
            fence = self._fence
            try:
                with self._transaction():
                    if fence:
                        taken = self._taken(entries)
                        if taken:
                            raise _TakenOver(taken)
                    if started:
                        db.executemany(self._start_run, started)
                    numbers = self._run_numbers(entries)
                    db.executemany(
                        _INSERT_EVENT_AGAIN if unsure else _INSERT_EVENT,
                        [(numbers.get(e.run_id), e.run_id, e.seq, e.type, e.step_id, e.ts,
                          e.data) for e in entries],
                    )  # fmt: skip
                    if unsure:
                        due = {r: row for r, row in due.items() if r not in unsure}
                    if due:
                        db.executemany(_UPDATE_RUN, due.values())
                    if raised:
                        db.executemany(
                            _INSERT_ESCALATION_AGAIN if unsure else _INSERT_ESCALATION, raised
                        )
                    if unsure:
                        for run_id in unsure:
                            self._rebuild_row(run_id)
                        escalating.update(unsure)
                    if escalating:
                        db.executemany(_RUN_WAITING, [(r, r) for r in escalating])
                    if settled:
                        db.executemany(
                            "DELETE FROM live_text WHERE run_id = ? AND step_id = ?", settled
                        )
                    if withdrawn:
                        db.executemany(_WITHDRAW_ESCALATIONS, withdrawn)
                    if released:
                        db.executemany(
                            "UPDATE runs SET owner = NULL, heartbeat = NULL WHERE id = ?",
                            released,
                        )
                    if unstreamed:
                        db.executemany("DELETE FROM live_text WHERE run_id = ?", unstreamed)
                    if remembered:
                        db.executemany(
                            "INSERT INTO memory VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                            " ON CONFLICT DO NOTHING",
                            remembered,
                        )
                    self._announce("events")
            except StoreUnavailable:
                if self._unsure_commits and self._commit_unanswered:
                    self._unsure = unsure | {e.run_id for e in entries}
                raise
            self._fence = False
            if unsure:
                self._unsure = set()
                for run_id in unsure:
                    self._behind.pop(run_id, None)
                    behind.pop(run_id, None)
            self._after_commit(data_bytes)
            for run_id in due:
                self._behind.pop(run_id, None)
            self._behind.update(behind)
            if started:
                if len(self._clean) > MAX_KEPT_NUMBERS:  # runs that ended in another process
                    self._clean.clear()
                self._clean.update(row[0] for row in started if row[2] == "running")
            if escalating:
                self._clean.difference_update(escalating)
            if settled:
                live.difference_update(settled)
            if stopped:
                done = {run_id for (run_id,) in stopped}
                for run_id in done:
                    self._numbers.pop(run_id, None)
                self._clean.difference_update(done)
                if unstreamed:
                    self._live = {key for key in live if key[0] not in done}

    def _taken(self, entries: Sequence[LogEntry]) -> dict[str, str]:
        """This owner's leases renewed (no one takes its runs over from now on), then
        the batch's runs that a live process other than this one holds: run id ->
        owner (inside the write's transaction, the rows locked)."""
        now = time.time()
        db = self._db
        db.execute(
            "UPDATE runs SET heartbeat = ? WHERE owner = ? AND status IN"
            " ('running', 'waiting_for_human')",
            (now, self.owner),
        )
        ids = sorted({e.run_id for e in entries})
        taken: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ", ".join("?" * len(part))
            rows = db.execute(
                f"SELECT id, owner, heartbeat FROM runs WHERE id IN ({marks}){self._for_update}",
                part,
            ).fetchall()
            taken.update(
                (run_id, owner) for run_id, owner, heartbeat in rows
                if owner and owner != self.owner and lease_alive(owner, heartbeat, now)
            )  # fmt: skip
        return taken

    def _run_numbers(self, entries: Sequence[LogEntry]) -> dict[str, int]:
        """The run numbers of the batch's runs, which order their events in the table
        (read once per run and kept while it works; the caller is in the transaction
        that starts new ones)."""
        numbers = self._numbers
        unknown = {e.run_id for e in entries if e.run_id not in numbers}
        if unknown:
            marks = ", ".join("?" * len(unknown))
            rows = self._db.execute(f"SELECT id, no FROM runs WHERE id IN ({marks})", [*unknown])
            if len(numbers) > MAX_KEPT_NUMBERS:  # runs that ended in another process
                numbers.clear()
            numbers.update(rows.fetchall())
        return numbers

    @staticmethod
    def _due(
        deltas: dict[str, RunDelta], escalating: set[str]
    ) -> tuple[dict[str, RunDelta], dict[str, tuple[object, ...]]]:
        """Split the batch's runs' summaries (each with what its row already lagged) into
        those that stay behind and the ``_UPDATE_RUN`` rows to write now."""
        behind: dict[str, RunDelta] = {}
        due: dict[str, tuple[object, ...]] = {}
        now = time.time()
        for run_id, delta in deltas.items():
            if delta.status or run_id in escalating or now - delta.since >= summaries.SUMMARY_LAG_S:
                due[run_id] = delta.row(run_id)
            else:
                behind[run_id] = delta
        return behind, due

    def forget(self, *, memory_id: str | None = None, subject: str | None = None) -> int:
        """Delete a fact (id or unique prefix) or a subject's facts."""
        if memory_id is not None:
            (found,) = self._by_prefix("memory", "id", memory_id, "memory")
            with self._session("write to") as db:
                return db.execute("DELETE FROM memory WHERE id = ?", (found,)).rowcount
        if subject is not None:
            with self._session("write to") as db:
                return db.execute("DELETE FROM memory WHERE subject = ?", (subject,)).rowcount
        return 0

    def add_audit(self, record: AuditRecord) -> None:
        """Keep an audit's report (a record with the same id is replaced)."""
        row = record.model_dump()
        row["ok"] = int(row["ok"])  # an INTEGER column on every backend
        row["report"] = json.dumps(row["report"])
        row["run_ids"] = json.dumps(row["run_ids"])
        with self._session("write to") as db:
            db.execute(
                f"INSERT INTO audits ({AUDIT_COLUMNS}) VALUES ({', '.join('?' * len(row))})"
                f" ON CONFLICT (id) DO UPDATE SET"
                f" {', '.join(f'{c} = excluded.{c}' for c in row if c != 'id')}",
                list(row.values()),
            )

    def put_live(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Record the text streamed so far by the calls in flight: (run, step, text)."""
        now = time.time()
        with self._session("write to") as db:
            db.executemany(
                "INSERT INTO live_text (run_id, step_id, text, updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (run_id, step_id) DO UPDATE SET text = excluded.text,"
                " updated = excluded.updated",
                [(run_id, step_id, text, now) for run_id, step_id, text in items],
            )
            self._live.update((run_id, step_id) for run_id, step_id, _ in items)

    @contextlib.contextmanager
    def _transaction(self, doing: str = "write to") -> Iterator[Any]:
        """One transaction (the caller holds ``_lock``): committed at the end, rolled
        back on any error; a driver's error is raised as :class:`StoreError`
        (:class:`StoreUnavailable` when waiting may cure it).

        ``_commit_unanswered`` says afterwards whether the COMMIT itself failed: only
        then may the transaction have been applied (the server got it and the answer
        was lost); a statement before it that failed leaves nothing behind."""
        db = self._db
        self._commit_unanswered = False
        try:
            db.execute(self._begin)
            yield db
            self._commit_unanswered = True
            db.execute("COMMIT")
            self._commit_unanswered = False
        except self._errors as exc:
            self._rollback()
            raise self._failure(exc, doing) from exc
        except BaseException:
            self._commit_unanswered = False
            self._rollback()
            raise
        self.health.answered()

    def _catch_up_row(self, run_id: str) -> None:
        """Rewrite the run's summary row from the events it lags (inside a transaction:
        a process that died left it behind, and the new owner's rows build on it)."""
        rows = self._db.execute(
            "SELECT r.id, e.data FROM runs r JOIN events e ON e.run_no = r.no"
            " AND e.seq > r.last_seq WHERE r.id = ? ORDER BY e.seq",
            (run_id,),
        )
        for delta in folded(rows).values():
            self._db.execute(_UPDATE_RUN, delta.row(run_id))

    def _rebuild_row(self, run_id: str) -> None:
        """Make the run's summary row again from all of its events (inside a
        transaction): after a write whose commit may or may not have been applied, a
        row built by adding deltas could count that write twice or not at all."""
        self._db.execute(_RESET_ROW, (run_id,))
        self._catch_up_row(run_id)

    def decide(
        self,
        escalation_id: str,
        decision: str,
        *,
        by: str,
        note: str = "",
        text: str | None = None,
    ) -> Escalation:
        """Record a decision; the conditional UPDATE makes exactly one decider win."""
        if decision not in ("approve", "edit", "reject"):
            raise DecisionError(f"unknown decision {decision!r}: approve, edit or reject")
        if decision == "edit" and text is None:
            raise DecisionError("an edit needs the new text")
        current = self.get_escalation(escalation_id)
        with self._lock, self._transaction("record the decision in") as db:
            run_status = db.execute(
                f"SELECT status FROM runs WHERE id = ?{self._for_update}", (current.run_id,)
            ).fetchone()
            changed = db.execute(
                "UPDATE escalations SET status = ?, decided_by = ?, decided_at = ?,"
                " note = ?, text = ? WHERE id = ? AND status = 'waiting'",
                (decision, by, time.time(), note, text, current.id),
            ).rowcount
            if changed and run_status and run_status[0] in FINAL_STATUSES:
                raise DecisionError(
                    f"escalation {current.id} no longer waits: its run {current.run_id}"
                    f" has {run_status[0]}"
                )
            if changed:
                self._announce("decisions")
        decided = self.get_escalation(current.id)
        if not changed and decided.status == "withdrawn":
            raise DecisionError(f"escalation {current.id} no longer waits: {decided.note}")
        if not changed:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(decided.decided_at or 0))
            raise DecisionError(
                f"escalation {current.id} was already decided: {decided.status} by"
                f" {decided.decided_by} at {when}"
            )
        return decided

    def request_cancel(self, run_id: str) -> RunSummary:
        """Flag the run for cancellation. A queued run, or a stalled one (no process
        executes it), is cancelled here and now; one that is executing stops within a
        second, in its process."""
        summary = self.get_run(run_id)
        if summary.status in FINAL_STATUSES:
            raise DecisionError(f"run {summary.id} has already {summary.status}")
        # flagged first: a process that takes the run over meanwhile sees it
        with self._session("write to") as db:
            db.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (summary.id,))
            self._announce("cancels")
        if summary.status == "queued":
            reason = "cancelled before it started"
        elif summary.stalled:
            reason = "cancelled while no process ran it"
        else:
            return self.get_run(summary.id)
        event = RunCancelled(run_id=summary.id, seq=summary.last_seq + 1, ts=time.time(),
                             reason=reason)  # fmt: skip
        with contextlib.suppress(StoreError):  # taken over meanwhile: the flag stops it there
            self.write([log_entry(event)])
        return self.get_run(summary.id)

    # -- copying a store (see :mod:`.copy`) -----------------------------------

    def put_rows(
        self, table: str, columns: Sequence[str], key: str, rows: Sequence[Sequence[object]]
    ) -> None:
        """Insert ``rows`` into ``table``, or update the ones whose ``key`` is there, in
        one transaction (a run gets this store's next number)."""
        names = ", ".join(columns)
        marks = ", ".join("?" * len(columns))
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
        if table == "runs" and self._next_number:
            names, marks = f"{names}, no", f"{marks}, {self._next_number}"
        sql = (f"INSERT INTO {table} ({names}) VALUES ({marks})"
               f" ON CONFLICT ({key}) DO UPDATE SET {updates}")  # fmt: skip
        with self._lock, self._transaction() as db:
            db.executemany(sql, rows)

    def put_events(self, rows: Sequence[Sequence[object]]) -> None:
        """Insert events given as ``(run_no, run_id, seq, type, step_id, ts, data)``,
        those already there left as they are, in one transaction."""
        with self._lock, self._transaction() as db:
            db.executemany(
                "INSERT INTO events (run_no, run_id, seq, type, step_id, ts, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                rows,
            )

    def prune(self, before: float, *, dry_run: bool = False) -> tuple[int, int]:
        """Delete the runs that ended before ``before`` (a time), with their events and
        escalations, in one transaction; return (runs, events). Unfinished runs are
        never pruned; facts kept about subjects stay (forget them on their own)."""
        finals = ", ".join(f"'{s}'" for s in sorted(FINAL_STATUSES))
        chosen = f"SELECT no FROM runs WHERE status IN ({finals}) AND updated < ?"
        runs, events = self._query(
            f"SELECT COUNT(*), (SELECT COUNT(*) FROM events WHERE run_no IN ({chosen}))"
            f" FROM runs WHERE no IN ({chosen})",
            (before, before),
        )[0]
        if dry_run or not runs:
            return runs, events
        ids = f"SELECT id FROM runs WHERE no IN ({chosen})"
        with self._lock, self._transaction() as db:
            db.execute(f"DELETE FROM events WHERE run_no IN ({chosen})", (before,))
            db.execute(f"DELETE FROM escalations WHERE run_id IN ({ids})", (before,))
            db.execute(f"DELETE FROM live_text WHERE run_id IN ({ids})", (before,))
            db.execute(f"DELETE FROM runs WHERE no IN ({chosen})", (before,))
        return runs, events

    def claim_queued(self, limit: int) -> list[RunSummary]:
        """Take up to ``limit`` queued runs, oldest first; no two callers get the same run."""
        if limit <= 0:
            return []
        # A claim whose answer is lost with the connection leaves runs this owner holds
        # without knowing: orphaned() lists a handle's own runs, so its worker resumes them.
        with self._session("claim queued runs in") as db:
            rows = db.execute(
                "UPDATE runs SET status = 'running', owner = ?, heartbeat = ? WHERE id IN"
                " (SELECT id FROM runs WHERE status = 'queued' ORDER BY created LIMIT ?"
                f"{self._skip_locked}) RETURNING id",
                (self.owner, time.time(), limit),
            ).fetchall()
        return [self.get_run(row[0]) for row in rows]

    def take_over(self, run_id: str) -> None:
        """Become the run's owner unless a live process holds it; raise RunBusy if one does."""
        now = time.time()
        with self._lock, self._transaction("take the run over in") as db:
            row = db.execute(
                f"SELECT owner, heartbeat FROM runs WHERE id = ?{self._for_update}", (run_id,)
            ).fetchone()
            if row and row[0] != self.owner and lease_alive(row[0], row[1], now):
                raise RunBusy(
                    f"run {run_id} is being executed by {row[0]} (alive {now - row[1]:.0f} s"
                    " ago); resume it only after that process stops"
                )
            db.execute(
                "UPDATE runs SET owner = ?, heartbeat = ? WHERE id = ?", (self.owner, now, run_id)
            )
            # text a dead process was streaming: nobody will settle it now
            db.execute("DELETE FROM live_text WHERE run_id = ?", (run_id,))
            self._catch_up_row(run_id)

    def heartbeat(self) -> None:
        """Say that this owner's unfinished runs are still being executed."""
        with self._session("write to") as db:
            db.execute(
                "UPDATE runs SET heartbeat = ? WHERE owner = ?"
                " AND status IN ('running', 'waiting_for_human')",
                (time.time(), self.owner),
            )

    def close(self) -> None:
        """Bring the summary rows up to date, then close the backend's connection."""
        if self._behind:
            # the rows are a cache: readers fold the events in, so a failure is no loss
            with self._lock, contextlib.suppress(StoreError), self._transaction() as db:
                db.executemany(_UPDATE_RUN, [d.row(r) for r, d in self._behind.items()])
            self._behind = {}
        self._close()

    def _close(self) -> None:
        with self._lock:
            self._db.close()
