"""The run store's schema, built by migrations applied in order and recorded by name.

Each migration is a function of an open connection, run inside the transaction of
:func:`migrate`. They are history: a released one is never edited; a change to the
schema is a new migration at the end of ``MIGRATIONS``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable


def _script(db: sqlite3.Connection, sql: str) -> None:
    """Run DDL statements one by one inside the caller's transaction
    (``executescript`` would commit it first)."""
    for statement in sql.split(";"):
        if statement.strip():
            db.execute(statement)


def m001_initial(db: sqlite3.Connection) -> None:
    """Runs (a summary per run) and events (the log itself)."""
    _script(
        db,
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            crew TEXT NOT NULL,
            status TEXT NOT NULL,
            input TEXT NOT NULL,
            output TEXT,
            error TEXT,
            error_kind TEXT,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            steps INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            current_persona TEXT,
            current_step TEXT,
            last_seq INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX runs_created ON runs (created);
        CREATE INDEX runs_status ON runs (status, created);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            step_id TEXT,
            ts REAL NOT NULL,
            data TEXT NOT NULL,
            UNIQUE (run_id, seq)
        );
        """,
    )


def m002_escalations(db: sqlite3.Connection) -> None:
    """Escalations: folded from escalation events, and the mailbox of decisions."""
    _script(
        db,
        """
        CREATE TABLE escalations (
            id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            crew TEXT NOT NULL DEFAULT '',
            step_id TEXT,
            persona TEXT NOT NULL,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL,
            risk REAL NOT NULL DEFAULT 0,
            evidence TEXT NOT NULL DEFAULT '{}',
            proposed TEXT,
            created REAL NOT NULL,
            status TEXT NOT NULL DEFAULT 'waiting',
            decided_by TEXT,
            decided_at REAL,
            note TEXT NOT NULL DEFAULT '',
            text TEXT
        );
        CREATE INDEX escalations_status ON escalations (status, risk DESC, created DESC);
        CREATE INDEX escalations_run ON escalations (run_id);
        """,
    )


def m003_cancel_requests(db: sqlite3.Connection) -> None:
    """A flag other processes set to cancel a run its runner then cancels."""
    db.execute("ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0")


def m004_leases(db: sqlite3.Connection) -> None:
    """Which process executes a run, and when it last said it was alive."""
    db.execute("ALTER TABLE runs ADD COLUMN owner TEXT")
    db.execute("ALTER TABLE runs ADD COLUMN heartbeat REAL")


def m005_live_text(db: sqlite3.Connection) -> None:
    """Text a model is streaming, per run and step, until its call is logged."""
    db.execute(
        "CREATE TABLE live_text (run_id TEXT NOT NULL, step_id TEXT NOT NULL, text TEXT NOT NULL,"
        " updated REAL NOT NULL, PRIMARY KEY (run_id, step_id))"
    )


def m006_memory(db: sqlite3.Connection) -> None:
    """Facts per subject, kept from memory_written events."""
    _script(
        db,
        """
        CREATE TABLE memory (
            id TEXT PRIMARY KEY, subject TEXT NOT NULL, channel TEXT NOT NULL,
            fact TEXT NOT NULL, run_id TEXT NOT NULL, step_id TEXT, persona TEXT NOT NULL,
            created REAL NOT NULL);
        CREATE INDEX memory_subject ON memory (subject, created);
        """,
    )


def m007_audits(db: sqlite3.Connection) -> None:
    """Audit reports (bias probes, adversarial suites), beside the runs they made."""
    _script(
        db,
        """
        CREATE TABLE audits (
            id TEXT PRIMARY KEY, kind TEXT NOT NULL, crew TEXT NOT NULL, created REAL NOT NULL,
            ok INTEGER NOT NULL, summary TEXT NOT NULL, report TEXT NOT NULL,
            run_ids TEXT NOT NULL);
        CREATE INDEX audits_created ON audits (created);
        """,
    )


def m008_run_subject(db: sqlite3.Connection) -> None:
    """The subject a run is about (``audit:...`` for an audit's runs), filled for old runs."""
    db.execute("ALTER TABLE runs ADD COLUMN subject TEXT")
    db.execute(
        "UPDATE runs SET subject = (SELECT json_extract(data, '$.subject') FROM events"
        " WHERE events.run_id = runs.id AND type = 'run_started')"
    )


def m009_events_by_run_number(db: sqlite3.Connection) -> None:
    """Runs get a number in the order they were first logged, and events are indexed
    by (run number, seq) instead of (run id, seq).

    Run ids are random, so with many runs at work one commit's events landed all
    over the old index (a dirty page each); run numbers of the runs at work sit
    side by side. The table is rebuilt: SQLite cannot drop a UNIQUE constraint.
    """
    _script(
        db,
        """
        ALTER TABLE runs ADD COLUMN no INTEGER;
        UPDATE runs SET no = rowid;
        CREATE UNIQUE INDEX runs_no ON runs (no);
        CREATE TABLE events_by_no (
            id INTEGER PRIMARY KEY,
            run_no INTEGER,
            run_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            step_id TEXT,
            ts REAL NOT NULL,
            data TEXT NOT NULL,
            UNIQUE (run_no, seq)
        );
        INSERT INTO events_by_no (id, run_no, run_id, seq, type, step_id, ts, data)
            SELECT e.id, r.no, e.run_id, e.seq, e.type, e.step_id, e.ts, e.data
            FROM events e LEFT JOIN runs r ON r.id = e.run_id ORDER BY e.id;
        DROP TABLE events;
        ALTER TABLE events_by_no RENAME TO events;
        """,
    )


def m010_replays(db: sqlite3.Connection) -> None:
    """A replay's run names the run it replays: like an audit's runs, it is a check of a
    crew, not the fleet's work, and the fleet's figures leave it out."""
    db.execute("ALTER TABLE runs ADD COLUMN replay_of TEXT")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    m001_initial,
    m002_escalations,
    m003_cancel_requests,
    m004_leases,
    m005_live_text,
    m006_memory,
    m007_audits,
    m008_run_subject,
    m009_events_by_run_number,
    m010_replays,
]


def migrate(db: sqlite3.Connection) -> None:
    """Apply the migrations not yet recorded in ``_migrations``; safe to call every time,
    from several processes at once (a runner and a monitor opening a new store)."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL)")
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    if all(m.__name__ in done for m in MIGRATIONS):
        return
    db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it done
    try:
        done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
        for migration in MIGRATIONS:
            if migration.__name__ in done:
                continue
            migration(db)
            db.execute(
                "INSERT INTO _migrations (name, applied) VALUES (?, ?)",
                (migration.__name__, time.time()),
            )
        db.execute("COMMIT")
    except BaseException:
        db.rollback()
        raise
