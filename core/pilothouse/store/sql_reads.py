"""The run store's reads in SQL, for every SQL backend (the writes: :mod:`.sql`).

The runs, their events, escalations, facts and audit records as readers get them
back, through the few things a backend says its own way: how it looks inside the
events' JSON and how it matches an id's first characters.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from ..errors import NotFound, StoreError, StoreUnavailable
from ..events import FINAL_STATUSES, BaseEvent, parse_event
from .base import (
    AUDIT_SUBJECT,
    AuditRecord,
    Escalation,
    MemoryItem,
    RunSummary,
    StoredEvent,
)
from .health import StoreHealth
from .lease import lease_alive
from .summaries import RunDelta, folded

RUN_COLUMNS = ", ".join(RunSummary.model_fields)
MEMORY_COLUMNS = ", ".join(MemoryItem.model_fields)
AUDIT_COLUMNS = ", ".join(AuditRecord.model_fields)
ESCALATION_COLUMNS = ", ".join(Escalation.model_fields)


def memory_item(row: tuple) -> MemoryItem:
    """A ``memory`` row as a :class:`MemoryItem`."""
    return MemoryItem(**dict(zip(MemoryItem.model_fields, row, strict=True)))


class SQLReads:
    """What every SQL run store reads, over the backend's connection (``_db``) and lock."""

    _db: Any
    _lock: threading.Lock
    location: str
    owner: str | None
    #: whether the store answers, as this handle last found it
    health: StoreHealth
    #: what a backend's driver raises
    _errors: ClassVar[tuple[type[Exception], ...]] = ()
    #: the store was unreachable since the last write (see ``SQLRunStore.write``)
    _fence: bool

    def _transient(self, exc: Exception) -> bool:
        """Whether a driver's error leaves the store unreachable for now (a lost
        connection, a server down, a locked file, a full disk) rather than broken."""
        return False

    def _rollback(self) -> None:
        """Roll back the transaction in progress, if any (nothing on a lost connection)."""
        self._db.rollback()

    def _failure(self, exc: Exception, doing: str) -> StoreError:
        """The error a failed operation raises, in one line: :class:`StoreUnavailable`
        (noted in :attr:`health`) when waiting may cure it."""
        text = " ".join(str(exc).split())
        message = f"cannot {doing} the run store {self.location}: {text}"
        if self._transient(exc):
            self.health.failed(text)
            # leases may have run out meanwhile: the next write checks whose runs are whose
            self._fence = True
            return StoreUnavailable(message)
        return StoreError(message)

    @contextlib.contextmanager
    def _session(self, doing: str = "read") -> Iterator[Any]:
        """The connection under the lock, for statements outside a transaction: a
        driver's error is raised as :class:`~pilothouse.errors.StoreError`."""
        with self._lock:
            try:
                yield self._db
            except self._errors as exc:
                self._rollback()
                raise self._failure(exc, doing) from exc
            self.health.answered()

    def _json_field(self, column: str, key: str) -> str:
        """SQL for the text of top-level ``key`` of the JSON in ``column``."""
        return f"json_extract({column}, '$.{key}')"

    def _json_doc(self, column: str) -> str:
        """SQL for a JSON text column as a document that :meth:`_json_get` reads from."""
        return column

    def _json_get(self, doc: str, path: str, number: bool) -> str:
        """SQL for the value at the dotted ``path`` of ``doc`` (a number when ``number``)."""
        return f"json_extract({doc}, '$.{path}')"

    def _prefix(self, column: str, key: str) -> tuple[str, tuple[object, ...]]:
        """SQL and arguments matching the rows whose ``column`` starts with ``key``."""
        return f"{column} >= ? AND {column} < ?", (key, key + "\uffff")

    def memories(self, subject: str | None = None, *, limit: int = 200) -> list[MemoryItem]:
        """The newest ``limit`` facts about ``subject`` (or all), oldest first."""
        rows = self._select(
            "memory", MEMORY_COLUMNS, "created DESC, id DESC", limit, subject=subject
        )
        return [memory_item(row) for row in reversed(rows)]

    def memories_by_id(self, ids: Sequence[str]) -> list[MemoryItem]:
        """The facts with these ids, in that order: from the memory table, or, for one
        forgotten since, from the ``memory_written`` event that kept it."""
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        rows = self._query(f"SELECT {MEMORY_COLUMNS} FROM memory WHERE id IN ({marks})", ids)
        found = {row[0]: memory_item(row) for row in rows}
        missing = [i for i in ids if i not in found]
        if missing:
            rows = self._query(
                "SELECT data FROM events WHERE type = 'memory_written'"
                f" AND {self._json_field('data', 'memory_id')}"
                f" IN ({', '.join('?' * len(missing))})",
                missing,
            )
            for (data,) in rows:
                e: Any = parse_event(data)
                found[e.memory_id] = MemoryItem.of(e)
        return [found[i] for i in ids if i in found]

    def audits(
        self, *, kind: str | None = None, crew: str | None = None, limit: int = 1000
    ) -> list[AuditRecord]:
        """Audit reports, the newest first."""
        rows = self._select(
            "audits", AUDIT_COLUMNS, "created DESC, id", limit, kind=kind, crew=crew
        )
        return [self._audit(row) for row in rows]

    def get_audit(self, audit_id: str) -> AuditRecord:
        """One audit by id or unique id prefix."""
        return self._audit(self._by_prefix("audits", AUDIT_COLUMNS, audit_id, "audit"))

    @staticmethod
    def _audit(row: tuple) -> AuditRecord:
        data = dict(zip(AuditRecord.model_fields, row, strict=True))
        data["report"] = json.loads(data["report"])
        data["run_ids"] = json.loads(data["run_ids"])
        return AuditRecord(**data)

    def live(self, run_id: str) -> dict[str, str]:
        """The text the run's model calls in flight have streamed so far, by step."""
        rows = self._query("SELECT step_id, text FROM live_text WHERE run_id = ?", (run_id,))
        return dict(rows)

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        with self._session() as db:
            return db.execute(sql, args).fetchall()

    def list_runs(
        self, *, status: str | None = None, crew: str | None = None, limit: int = 100
    ) -> list[RunSummary]:
        """Runs, newest first, optionally filtered by status and crew."""
        rows = self._select(
            "runs", RUN_COLUMNS, "created DESC, no DESC", limit, status=status, crew=crew
        )
        return self._caught_up([self._summary(row) for row in rows])

    def runs_by_id(self, ids: Sequence[str]) -> list[RunSummary]:
        """The runs among ``ids``, in chunks that stay under SQLite's parameter limit."""
        found: list[RunSummary] = []
        ids = list(ids)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ", ".join("?" * len(part))
            rows = self._query(f"SELECT {RUN_COLUMNS} FROM runs WHERE id IN ({marks})", part)
            found.extend(self._summary(row) for row in rows)
        return self._caught_up(found)

    def last_event_id(self) -> int:
        """The newest event's global id."""
        return self._query("SELECT COALESCE(MAX(id), 0) FROM events")[0][0]

    def get_run(self, run_id: str) -> RunSummary:
        """One run by id or by a unique prefix of its id."""
        summary = self._summary(self._by_prefix("runs", RUN_COLUMNS, run_id, "run"))
        return self._caught_up([summary])[0]

    def _caught_up(self, summaries: list[RunSummary]) -> list[RunSummary]:
        """The summaries with the events their rows lag behind folded in (see
        :meth:`write`); a finished run's row is never behind."""
        working = [(s.id, s.last_seq) for s in summaries if s.status not in FINAL_STATUSES]
        deltas: dict[str, RunDelta] = {}
        for start in range(0, len(working), 400):  # two parameters each, under the limit
            part = working[start : start + 400]
            lag = ", ".join("(?, ?)" for _ in part)
            rows = self._query(
                f"WITH lag (id, after) AS (VALUES {lag}) SELECT lag.id, e.data FROM lag"
                " JOIN runs r ON r.id = lag.id JOIN events e ON e.run_no = r.no"
                " AND e.seq > lag.after ORDER BY e.run_no, e.seq",
                [value for pair in part for value in pair],
            )
            deltas.update(folded(rows))
        return [deltas[s.id].apply(s) if s.id in deltas else s for s in summaries]

    def _by_prefix(self, table: str, columns: str, key: str, what: str) -> tuple:
        """The row whose id is ``key``, or the only one whose id starts with it."""
        if not key.strip():
            raise NotFound(f"give a {what} id (or the first characters of one)")
        clause, args = self._prefix("id", key)
        rows = self._query(f"SELECT {columns} FROM {table} WHERE {clause} LIMIT 2", args)
        exact = [r for r in rows if r[0] == key]
        if exact:
            return exact[0]
        if not rows:
            raise NotFound(f"no {what} {key!r} in {self.location}")
        if len(rows) > 1:
            raise NotFound(f"{what} id prefix {key!r} is ambiguous; give more characters")
        return rows[0]

    def _select(
        self, table: str, columns: str, order: str, limit: int, **filters: object
    ) -> list[tuple]:
        """Rows of ``table`` matching the filters that are set (column = value)."""
        set_ = {column: value for column, value in filters.items() if value}
        clause = " AND ".join(f"{column} = ?" for column in set_)
        where = f"WHERE {clause}" if clause else ""
        return self._query(
            f"SELECT {columns} FROM {table} {where} ORDER BY {order} LIMIT ?",
            [*set_.values(), limit],
        )

    def events(self, run_id: str, *, after_seq: int = 0) -> list[BaseEvent]:
        """The run's events in order."""
        rows = self._query(
            "SELECT data FROM events WHERE run_no = (SELECT no FROM runs WHERE id = ?)"
            " AND seq > ? ORDER BY seq",
            (run_id, after_seq),
        )
        return [parse_event(row[0]) for row in rows]

    def events_since(self, after_id: int = 0, *, limit: int = 1000) -> list[StoredEvent]:
        """Every run's events after global id ``after_id``, oldest first."""
        rows = self._query(
            "SELECT id, data FROM events WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [StoredEvent(id=row[0], event=parse_event(row[1])) for row in rows]

    def escalations(
        self, *, status: str | None = "waiting", run_id: str | None = None, limit: int = 100
    ) -> list[Escalation]:
        """Escalations, the riskiest and newest first."""
        rows = self._select(
            "escalations", ESCALATION_COLUMNS, "risk DESC, created DESC", limit,
            status=status, run_id=run_id,
        )  # fmt: skip
        return [self._escalation(row) for row in rows]

    def get_escalation(self, escalation_id: str) -> Escalation:
        """One escalation by id or unique id prefix."""
        row = self._by_prefix("escalations", ESCALATION_COLUMNS, escalation_id, "escalation")
        return self._escalation(row)

    def select_rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        """Rows of a read-only query (``?`` placeholders), for copying and checking."""
        return self._query(sql, args)

    def metric_facts(
        self,
        fields: Sequence[tuple[str, bool]],
        *,
        crew: str | None = None,
        since: float | None = None,
        audits: bool = False,
    ) -> tuple[list[tuple], list[tuple]]:
        """See :meth:`RunStore.metric_facts`: the database reads the fields out of the
        JSON, far cheaper than parsing every event."""
        where, args = ["1 = 1"], []
        if crew:
            where.append("crew = ?")
            args.append(crew)
        if since is not None:
            where.append("created >= ?")
            args.append(since)
        if not audits:  # nor replays: they check a crew too
            where.append("COALESCE(subject, '') NOT LIKE ? AND replay_of IS NULL")
            args.append(f"{AUDIT_SUBJECT}%")
        chosen = " AND ".join(where)
        runs = self._query(f"SELECT id, crew, status, created FROM runs WHERE {chosen}", args)
        columns = ", ".join(self._json_get("doc", path, number) for path, number in fields)
        rows = self._query(
            f"SELECT run_id, step_id, type, {columns} FROM (SELECT id, run_id, step_id, type,"
            f" {self._json_doc('data')} AS doc FROM events WHERE type IN ('step_started',"
            " 'model_call', 'escalation_raised', 'escalation_decided')"
            f" AND run_id IN (SELECT id FROM runs WHERE {chosen})) AS e ORDER BY id",
            args,
        )
        return runs, rows

    def orphaned(self) -> list[str]:
        """Runs left running or waiting by a process that is gone, oldest first."""
        now = time.time()
        rows = self._query(
            "SELECT id, owner, heartbeat FROM runs"
            " WHERE status IN ('running', 'waiting_for_human') ORDER BY created"
        )
        return [r[0] for r in rows if r[1] == self.owner or not lease_alive(r[1], r[2], now)]

    def cancel_requested(self, ids: Sequence[str]) -> list[str]:
        """Those of ``ids`` flagged for cancellation."""
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        rows = self._query(
            f"SELECT id FROM runs WHERE cancel_requested = 1 AND id IN ({marks})", list(ids)
        )
        return [row[0] for row in rows]

    def decided_among(self, ids: Sequence[str]) -> list[Escalation]:
        """Those of ``ids`` that have a decision (the runner's poll for its waiting steps)."""
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        rows = self._query(
            f"SELECT {ESCALATION_COLUMNS} FROM escalations"
            f" WHERE id IN ({marks}) AND status != 'waiting'",
            list(ids),
        )
        return [self._escalation(row) for row in rows]

    @staticmethod
    def _escalation(row: tuple) -> Escalation:
        data = dict(zip(Escalation.model_fields, row, strict=True))
        data["evidence"] = json.loads(data["evidence"] or "{}")
        return Escalation(**data)

    @staticmethod
    def _summary(row: tuple) -> RunSummary:
        return RunSummary(**dict(zip(RunSummary.model_fields, row, strict=True)))
