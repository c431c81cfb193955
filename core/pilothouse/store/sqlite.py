"""The embedded run store: one SQLite file in WAL mode (its schema: :mod:`.sqlite_migrations`).

What it does is :class:`~.sql.SQLRunStore`'s; here is how it opens the file, keeps the
write-ahead log bounded (:mod:`.sqlite_wal`) and numbers runs.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.to_thread

from ..errors import StoreError
from ..events import LogEntry
from .sql import START_RUN, SQLRunStore
from .sqlite_migrations import migrate
from .sqlite_wal import BUSY_TIMEOUT_S, Checkpointer, WalBound, wal_path

#: SQLite's result codes for a file that is busy or locked beyond the busy timeout, a
#: failed read or write of the disk, a full disk, and a lock protocol that went wrong:
#: conditions that pass (runs wait them out); anything else (a damaged file, a file
#: that is not a database, a read-only one) does not
_TRANSIENT_CODES = frozenset({5, 6, 10, 13, 15})


class SQLiteRunStore(SQLRunStore):
    """A :class:`~pilothouse.RunStore` in one SQLite file (WAL: readers never block the
    writer)."""

    _errors = (sqlite3.Error,)
    _begin = "BEGIN IMMEDIATE"
    # A new run takes the next number (one writer at a time holds the write lock).
    _next_number = "(SELECT COALESCE(MAX(no), 0) + 1 FROM runs)"
    _start_run = START_RUN.format(number=", no", next_number=f", {_next_number}")

    def __init__(
        self, path: str | Path, *, synchronous: str = "NORMAL", owner: str | None = None
    ) -> None:
        self.path = Path(path)
        super().__init__(str(self.path), owner=owner)
        self._commit_in_thread = synchronous.upper() == "FULL"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S
            )
            self._set_up(synchronous)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the run store {self.path}: {exc}") from exc
        self._checkpointer: Checkpointer | None = None
        self._checkpointing = threading.Lock()
        self._wal_bound = WalBound(self.path, self._checkpointing)

    def _set_up(self, synchronous: str, attempts: int = 100) -> None:
        """WAL mode, durability and migrations. Switching a new file to WAL while
        another process does the same can fail at once with 'database is locked'
        (SQLite does not wait there), so that is retried for a few seconds."""
        for attempt in range(attempts):
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={synchronous}")
                # Checkpoints (and their fsync) run in a background thread, not in the
                # commit that happens to cross the threshold: see Checkpointer.
                self._db.execute("PRAGMA wal_autocheckpoint=0")
                migrate(self._db)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(0.05)

    async def commit(self, entries: Sequence[LogEntry]) -> None:
        """Commit on the event loop (a few tens of microseconds: handing the write to a
        thread costs more than it), or in a worker thread when every commit waits for
        the disk (``synchronous=FULL``)."""
        if not self._commit_in_thread:
            self.write(entries)
            return
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.write, entries)

    def _transient(self, exc: Exception) -> bool:
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _TRANSIENT_CODES

    def _before_write(self) -> None:
        if self._checkpointer is None:
            self._checkpointer = Checkpointer(self.path, self._checkpointing)
            self._checkpointer.start()

    def _after_commit(self, data_bytes: int) -> None:
        self._wal_bound.after_commit(self._db, data_bytes)

    def size(self) -> int:
        """Bytes the store takes on disk: its file and its write-ahead log."""
        return sum(p.stat().st_size for p in (self.path, wal_path(self.path)) if p.exists())

    def vacuum(self) -> tuple[int, int]:
        """Give the space of deleted rows back to the file system; return the store's
        size before and after. The store is locked while it runs (a process at work
        waits to commit), and it needs about the store's size again in free space."""
        before = self.size()
        try:
            with self._lock:
                self._db.execute("VACUUM")
                # VACUUM wrote the whole database into the WAL: copy it back, empty it
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot vacuum the run store {self.path}: {exc}") from exc
        return before, self.size()

    def _close(self) -> None:
        """Stop the checkpointer, fold the WAL into the database file and close."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
            with self._lock, contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with self._lock:
            self._db.close()
