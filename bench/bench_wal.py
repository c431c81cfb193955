"""The WAL under steady commits, with a CPU hog beside the writer: is it bounded?

The run store's checkpointer thread copies the WAL into the database now and then;
on a busy machine it is starved (of CPU, and of the write lock that steady commits
keep taking), and SQLite only starts the WAL over once a checkpoint has caught up.
The writer therefore bounds the WAL itself (store/sqlite_wal.py: WalBound). This
measures, in one run: commits of 4 KB events back to back for a fixed count, with
and without hogs on every core, and with the writer's bound switched off (the
checkpointer alone: the raw baseline), printing the WAL's peak and the time per
commit. The limit is set low (--limit-mb) so that a short run crosses it many times.

Usage: python bench/bench_wal.py [--commits N] [--limit-mb M] [--hogs H]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

from pilothouse.events import ErrorRaised, RunStarted, log_entry
from pilothouse.store import sqlite_wal
from pilothouse.store.sqlite import SQLiteRunStore


def hog(stop: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    """Spin until told to stop (each hog takes a core)."""
    while not stop.is_set():  # type: ignore[attr-defined]
        for _ in range(100_000):
            pass


def measure(folder: Path, commits: int, bound: bool) -> tuple[float, float, int]:
    """(peak WAL MB, mean µs per commit, times the writer emptied the WAL)."""
    store = SQLiteRunStore(folder / f"runs-{time.monotonic_ns()}.db")
    if not bound:
        store._wal_bound.after_commit = lambda db, data_bytes: None  # type: ignore[method-assign]
    start = RunStarted(run_id="r", seq=1, ts=1.0, crew="c", input="x", flow="sequential")
    store.write([log_entry(start)])
    wal = str(store.path) + "-wal"
    peak = 0
    began = time.perf_counter()
    for seq in range(2, commits + 2):
        event = ErrorRaised(run_id="r", seq=seq, ts=1.0, error_type="E", message="m" * 4000)
        store.write([log_entry(event)])
        if seq % 16 == 0:
            peak = max(peak, os.stat(wal).st_size)
    elapsed = time.perf_counter() - began
    emptied = store._wal_bound.attempts - store._wal_bound.gave_up
    store.close()
    return peak / 2**20, elapsed / commits * 1e6, emptied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=20_000)
    parser.add_argument("--limit-mb", type=float, default=16)
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    sqlite_wal.WAL_LIMIT_BYTES = int(args.limit_mb * 2**20)
    through = args.commits * 4096 / 2**20
    print(f"{args.commits} commits of a 4 KB event (~{through:.0f} MB through the WAL),"
          f" limit {args.limit_mb:g} MB")  # fmt: skip
    print(f"{'variant':<44}{'WAL peak MB':>12}{'us/commit':>11}{'emptied':>9}")
    with tempfile.TemporaryDirectory() as folder:
        for hogs in (0, args.hogs):
            stop = multiprocessing.Event()
            spinners = [multiprocessing.Process(target=hog, args=(stop,)) for _ in range(hogs)]
            for spinner in spinners:
                spinner.start()
            try:
                for bound in (False, True):
                    peak, per_commit, emptied = measure(Path(folder), args.commits, bound)
                    label = "writer bounds the WAL" if bound else "checkpointer alone (raw)"
                    label += f", {hogs} hog(s)"
                    print(f"{label:<44}{peak:>12.1f}{per_commit:>11.1f}{emptied:>9}")
            finally:
                stop.set()
                for spinner in spinners:
                    spinner.join(timeout=30)


if __name__ == "__main__":
    main()
