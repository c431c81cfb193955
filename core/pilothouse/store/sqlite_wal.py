"""The SQLite store's write-ahead log: copied into the database file in the background,
and kept under a bound by the writer whatever the machine is doing."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path


def wal_path(path: Path) -> Path:
    """The write-ahead log beside the database file ``path``."""
    return path.with_name(path.name + "-wal")


#: how long a write waits for another process's write to finish before it fails
BUSY_TIMEOUT_S = 30

#: a WAL this large is emptied by the writer itself, between two of its commits
WAL_LIMIT_BYTES = 256 * 1024 * 1024
#: the pages a commit adds to the WAL besides its rows, at most, and a page's frame there
COMMIT_PAGES = 12
FRAME_BYTES = 4096 + 24
#: how long emptying the WAL waits for readers to leave it, at most
FORCED_WAIT_S = 1.0


class Checkpointer(threading.Thread):
    """Copies the WAL into the database file every ``interval`` seconds (PASSIVE: it
    never blocks the writer or readers), so commits on the event loop stay cheap: the
    copying and its fsync happen here, not in the commit that crosses a threshold.

    A passive checkpoint alone does not bound the WAL: SQLite starts the file over
    only when a writer finds it wholly copied, which a checkpoint racing steady
    commits never achieves, and a thread starved of CPU or of the write lock (a busy
    machine) falls further behind. The bound is the writer's (:class:`WalBound`).
    """

    def __init__(self, path: Path, lock: threading.Lock, interval: float = 0.5) -> None:
        super().__init__(name=f"pilothouse-checkpoint-{path.name}", daemon=True)
        self.path = path
        #: held while copying, so that the writer emptying the WAL waits for the copy
        #: instead of finding SQLite's checkpoint lock taken
        self.lock = lock
        self.interval = interval
        self._stopping = threading.Event()

    def run(self) -> None:
        """Checkpoint until stopped, on a connection of its own."""
        db = sqlite3.connect(self.path, isolation_level=None, timeout=FORCED_WAIT_S)
        try:
            while not self._stopping.wait(self.interval):
                with self.lock, contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    def stop(self) -> None:
        """Stop after the current checkpoint and wait for the thread."""
        self._stopping.set()
        self.join()


class WalBound:
    """The writer's promise that the WAL stays under ``WAL_LIMIT_BYTES`` plus a commit,
    whatever the machine is doing: after a commit that leaves it past the limit, the
    writer empties it (a TRUNCATE checkpoint on its own connection, where no other
    writer can get in first). Under a steady load this happens once per limit's
    worth of commits (~0.4 s here for 230 MB, mostly giving the file's blocks back).

    Emptying also waits for readers to leave the WAL: a reader in the middle of a
    long read (the monitor, a portal build) makes it give up after ``FORCED_WAIT_S``,
    and the writer tries again only once the WAL has grown by another half limit, so
    a long read holds a commit back for ``FORCED_WAIT_S`` now and then, never each one.
    """

    def __init__(self, path: Path, lock: threading.Lock) -> None:
        self.wal = str(wal_path(path))
        #: the lock this process's checkpointer holds while it copies
        self.lock = lock
        #: the WAL size past which the next commit empties it
        self.threshold = WAL_LIMIT_BYTES
        #: what the WAL may hold by now at most: its size when last looked at, plus a
        #: generous guess of what each commit since added (so it is seldom looked at)
        self.at_most = 0
        #: how many times the writer tried to empty the WAL, and how many times readers
        #: made it give up (for tests and the benchmark)
        self.attempts = self.gave_up = 0

    def after_commit(self, db: sqlite3.Connection, data_bytes: int) -> None:
        """Empty the WAL if this commit, of ``data_bytes`` of events, left it past the
        threshold (the caller holds the write lock of the store's connection)."""
        # A commit adds its pages to the WAL: its rows, and a page or so for each
        # table and index it touched (a run's start touches the most: about 8).
        self.at_most += 2 * data_bytes + COMMIT_PAGES * FRAME_BYTES
        if self.at_most <= self.threshold:
            return
        try:
            size = os.stat(self.wal).st_size
        except OSError:
            return
        self.at_most = size
        if size <= self.threshold:
            return
        self.attempts += 1
        db.execute(f"PRAGMA busy_timeout = {int(FORCED_WAIT_S * 1000)}")
        try:
            with self.lock:
                busy, frames, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error:
            busy, frames = 1, 0
        finally:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        if not busy:
            self.threshold = WAL_LIMIT_BYTES
            self.at_most = 0
        elif frames >= 0:  # readers kept it waiting
            self.gave_up += 1
            self.threshold = size + WAL_LIMIT_BYTES // 2
        # else another process was checkpointing at that moment (SQLite then says busy
        # at once, with no frame counts): the next commit tries again
