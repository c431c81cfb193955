"""Moving a workspace between run stores: SQLite to PostgreSQL and back.

Everything the log and its tables hold is copied: runs (with their leases and cancel
flags), every event in its global order, escalations with their decisions, facts
kept per subject (forgotten ones stay forgotten: rows are copied, not rebuilt from
the events), and audit records. Live text is transient and stays behind.

A copy is idempotent: rows that are already there are updated in place (a run that
went on since the last copy) and events, which never change, are skipped. At the end
it verifies that each table holds as many rows on both sides and that every run's
events have the same digest (sha256 of their JSON in order) on both sides.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from pydantic import BaseModel

from ..errors import StoreError
from .sql import SQLRunStore

#: the columns copied, per table, and the key a row is known by
TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    "runs": (("id", "crew", "status", "input", "output", "error", "error_kind", "created",
              "updated", "steps", "input_tokens", "output_tokens", "cost_usd",
              "current_persona", "current_step", "last_seq", "cancel_requested", "owner",
              "heartbeat", "subject", "replay_of"), "id"),
    "escalations": (("id", "run_id", "crew", "step_id", "persona", "kind", "reason", "risk",
                     "evidence", "proposed", "created", "status", "decided_by", "decided_at",
                     "note", "text"), "id"),
    "memory": (("id", "subject", "channel", "fact", "run_id", "step_id", "persona",
                "created"), "id"),
    "audits": (("id", "kind", "crew", "created", "ok", "summary", "report", "run_ids"), "id"),
}  # fmt: skip
#: how many rows go in one transaction
BATCH = 1000


class CopyReport(BaseModel):
    """What a copy moved, and what its verification found."""

    source: str
    target: str
    #: rows per table on the target after the copy (events included)
    counts: dict[str, int]
    #: the runs whose events differ between the two stores (empty: verified)
    mismatched: list[str]
    #: tables whose row counts differ between the two stores
    uneven: list[str]

    @property
    def verified(self) -> bool:
        """Every count and every run's digest is the same on both sides."""
        return not self.mismatched and not self.uneven


def copy_store(
    source: SQLRunStore, target: SQLRunStore, progress: Callable[[str], None] | None = None
) -> CopyReport:
    """Copy everything ``source`` holds into ``target`` (see the module), then verify."""
    say = progress or (lambda message: None)
    for table, (columns, key) in TABLES.items():
        copied = 0
        for rows in _pages(source, table, columns, key):
            target.put_rows(table, columns, key, rows)
            copied += len(rows)
        say(f"{table}: {copied} row(s)")
    numbers = dict(target.select_rows("SELECT id, no FROM runs"))
    copied = 0
    for rows in _event_pages(source):
        target.put_events([(numbers.get(run_id), run_id, *rest) for run_id, *rest in rows])
        copied += len(rows)
    say(f"events: {copied} row(s)")
    return verify(source, target)


def verify(source: SQLRunStore, target: SQLRunStore) -> CopyReport:
    """Compare the two stores: rows per table, and every run's event digest."""
    counts = {}
    uneven = []
    for table in (*TABLES, "events"):
        (mine,), (theirs,) = (s.select_rows(f"SELECT COUNT(*) FROM {table}") for s in
                              (source, target))  # fmt: skip
        counts[table] = theirs[0]
        if mine[0] != theirs[0]:
            uneven.append(table)
    ours, copied = digests(source), digests(target)
    mismatched = sorted(run_id for run_id in ours.keys() | copied.keys()
                        if ours.get(run_id) != copied.get(run_id))  # fmt: skip
    return CopyReport(source=source.location, target=target.location, counts=counts,
                      mismatched=mismatched, uneven=uneven)  # fmt: skip


def digests(store: SQLRunStore) -> dict[str, str]:
    """sha256 of each run's events (seq and JSON) in order, by run id."""
    found: dict[str, hashlib._Hash] = {}
    after: tuple = ("", 0)
    while True:
        rows = store.select_rows(
            "SELECT run_id, seq, data FROM events WHERE run_id > ? OR (run_id = ? AND seq > ?)"
            " ORDER BY run_id, seq LIMIT ?",
            (after[0], after[0], after[1], BATCH),
        )
        if not rows:
            return {run_id: h.hexdigest() for run_id, h in found.items()}
        for run_id, seq, data in rows:
            digest = found.setdefault(run_id, hashlib.sha256())
            digest.update(f"{seq}\n{data}\n".encode())
        after = rows[-1][:2]


def _pages(
    store: SQLRunStore, table: str, columns: tuple[str, ...], key: str
) -> Iterator[list[tuple]]:
    after = ""
    while True:
        rows = store.select_rows(
            f"SELECT {', '.join(columns)} FROM {table} WHERE {key} > ? ORDER BY {key} LIMIT ?",
            (after, BATCH),
        )
        if not rows:
            return
        yield rows
        after = rows[-1][columns.index(key)]


def _event_pages(store: SQLRunStore) -> Iterator[list[tuple]]:
    """The source's events in its global order (the target numbers them in that order)."""
    after = 0
    while True:
        rows = store.select_rows(
            "SELECT id, run_id, seq, type, step_id, ts, data FROM events WHERE id > ?"
            " ORDER BY id LIMIT ?",
            (after, BATCH),
        )
        if not rows:
            return
        after = rows[-1][0]
        yield [row[1:] for row in rows]


def check_copyable(store: object) -> SQLRunStore:
    """``store`` as a store that can be copied (every bundled backend can)."""
    if not isinstance(store, SQLRunStore):
        raise StoreError(f"{type(store).__name__} cannot be copied: it is not an SQL store")
    return store
