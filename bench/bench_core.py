"""Framework overhead per agent step: pilothouse vs plain awaited calls, in one run.

Workload: a sequential crew of 4 personas, one model call each, on an
in-process fake model that answers at once. Measured:

- raw: a loop of plain awaited calls doing the same 4 calls per run;
- pilothouse with the event log off (no store and no observer: no event is built);
- raw + commit: the raw loop plus one SQLite commit per step (one small row),
  and plus the commit this log makes per step (4 JSON rows, (run, seq) index);
- pilothouse with the event log on but the store's SQL skipped: events built,
  serialized and queued, nothing written (what the event path costs by itself);
- pilothouse with the event log on (SQLite file, WAL, synchronous=NORMAL,
  every step committed before the next starts);
- 1,000 runs at once, log off and on.

Each figure is the best of ``--repeats`` rounds that run every variant in turn, so a
slow minute on a shared machine does not fall on one variant only.

Usage: python bench/bench_core.py [--runs N] [--concurrent N] [--repeats N]
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio

import pilothouse
from pilothouse import Model, ModelProvider, ModelRequest, ModelResponse, Usage, hookimpl

STEPS = 4
#: the JSON sizes (in units of the 2-character reply) of one step's 4 events as this
#: crew logs them: step started, context built, model call, step finished
EVENT_SIZES = (72, 170, 325, 88)
REPLY = ModelResponse(text="ok", usage=Usage(input_tokens=20, output_tokens=2))


class FakeModel(Model):
    provider, name = "fake", "model"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return REPLY


class FakeProvider(ModelProvider):
    name = "fake"

    def model(self, name: str) -> Model:
        return FakeModel()


class FakePlugin:
    __name__ = "fake"

    @hookimpl
    def register_models(self, register):
        register(FakeProvider())


CREW = pilothouse.Crew.model_validate(
    {
        "name": "bench",
        "flow": {"type": "sequential", "steps": [f"p{i}" for i in range(STEPS)]},
        "personas": {f"p{i}": {"instructions": f"You are p{i}."} for i in range(STEPS)},
        "limits": {"max_steps": 100},
    }
)


async def raw_run(model: FakeModel, text: str) -> str:
    for _ in range(STEPS):
        reply = await model.complete(None)  # type: ignore[arg-type]
        text = reply.text or ""
    return text


async def time_raw(runs: int, concurrent: int) -> float:
    model = FakeModel()
    start = time.perf_counter()
    if concurrent == 1:
        for i in range(runs):
            await raw_run(model, f"task {i}")
    else:
        async with anyio.create_task_group() as tg:
            for i in range(runs):
                tg.start_soon(raw_run, model, f"task {i}")
    return time.perf_counter() - start


async def time_raw_commit(runs: int, folder: str, shape: bool = False) -> float:
    """The floor of a durable log: the raw loop plus one SQLite commit per step.

    ``shape``: the commit this log makes per step, without pilothouse: the step's
    4 events as JSON rows of their real sizes, indexed by (run, seq), and the WAL
    checkpointed by a thread as the log does it (else every ~250th commit would
    checkpoint and fsync on the loop).
    """
    path = Path(tempfile.mkdtemp(dir=folder)) / "raw.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    if shape:  # and checkpoints as the log makes them: in a thread, not in a commit
        db.execute("PRAGMA wal_autocheckpoint=0")
        checkpointer = threading.Thread(target=checkpoint_every, args=(path, 0.5, stop := []))
        checkpointer.start()
    index = ", UNIQUE (run, step)" if shape else ""
    db.execute(f"CREATE TABLE events (id INTEGER PRIMARY KEY, run INT, step INT, data TEXT{index})")
    model = FakeModel()
    start = time.perf_counter()
    for i in range(runs):
        text = f"task {i}"
        for step in range(STEPS):
            reply = await model.complete(None)  # type: ignore[arg-type]
            text = reply.text or ""
            db.execute("BEGIN")
            if shape:
                rows = [(i, step * 4 + k, text * size) for k, size in enumerate(EVENT_SIZES)]
                db.executemany("INSERT INTO events (run, step, data) VALUES (?, ?, ?)", rows)
            else:
                db.execute("INSERT INTO events (run, step, data) VALUES (?, ?, ?)", (i, step, text))
            db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    if shape:
        stop.append(True)
        checkpointer.join()
    db.close()
    return elapsed


def checkpoint_every(path: Path, interval: float, stop: list[bool]) -> None:
    """Copy the WAL into the database file every ``interval`` s until ``stop`` is set."""
    db = sqlite3.connect(path, isolation_level=None)
    while not stop:
        time.sleep(interval)
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    db.close()


async def time_pilothouse(
    runs: int, concurrent: int, log_events: bool, folder: str, sql: bool = True
) -> float:
    """``sql=False``: the log does all it does but the store's SQL (its ``write`` does
    nothing), which shows what the event path costs before any row is written."""
    folder = tempfile.mkdtemp(dir=folder)  # a fresh store for every measurement
    settings = pilothouse.load_settings(workspace=folder, default_model="fake:model")
    async with pilothouse.Runtime(settings, plugins=[FakePlugin()], log_events=log_events) as rt:
        await rt.run(CREW, "warm-up")
        if not sql:
            rt.store.write = lambda entries: None  # type: ignore[method-assign,union-attr]
        start = time.perf_counter()
        if concurrent == 1:
            for i in range(runs):
                await rt.run(CREW, f"task {i}")
        else:
            async with anyio.create_task_group() as tg:
                for i in range(runs):
                    tg.start_soon(rt.run, CREW, f"task {i}")
        elapsed = time.perf_counter() - start
        if log_events and sql:
            done = rt.store.list_runs(status="succeeded", limit=runs + 10)
            assert len(done) == runs + 1, "every run must be in the log"
    return elapsed


def interleaved(repeats: int, variants: list[tuple[str, Callable, tuple]]) -> dict[str, float]:
    """The best time of each variant over ``repeats`` rounds that run every variant in
    turn: this machine drifts by tens of percent from one minute to the next, and a
    variant measured only in a slow minute would look worse than it is."""
    times: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    for _ in range(repeats):
        for label, fn, args in variants:
            gc.collect()
            times[label].append(anyio.run(fn, *args))
    return {label: min(values) for label, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=500, help="sequential runs per measurement")
    parser.add_argument("--concurrent", type=int, default=1000, help="runs at once")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    n, c = args.runs, args.concurrent
    with tempfile.TemporaryDirectory() as folder:
        # two groups, each led by its raw baseline: (label, coroutine function, arguments)
        groups = [
            (n, [
                ("raw awaited calls, sequential", time_raw, (n, 1)),
                ("pilothouse, log off, sequential", time_pilothouse, (n, 1, False, folder)),
                ("raw calls + 1 SQLite commit per step", time_raw_commit, (n, folder)),
                ("raw calls + this log's commit shape per step", time_raw_commit,
                 (n, folder, True)),
                ("pilothouse, log on, no SQL (events only)", time_pilothouse,
                 (n, 1, True, folder, False)),
                ("pilothouse, log on (SQLite), sequential", time_pilothouse,
                 (n, 1, True, folder)),
            ]),
            (c, [
                (f"raw awaited calls, {c} at once", time_raw, (c, c)),
                (f"pilothouse, log off, {c} at once", time_pilothouse, (c, c, False, folder)),
                (f"pilothouse, log on (SQLite), {c} at once", time_pilothouse,
                 (c, c, True, folder)),
            ]),
        ]  # fmt: skip
        best = interleaved(args.repeats, [row for _, rows in groups for row in rows])

    print(f"{STEPS}-step sequential crew, in-process fake model;"
          f" best of {args.repeats} interleaved rounds")  # fmt: skip
    print(f"{'variant':<46}{'us/step':>10}{'x raw':>9}")
    for runs, rows in groups:
        raw = best[rows[0][0]]
        for label, _, _ in rows:
            per_step = best[label] / (runs * STEPS)
            print(f"{label:<46}{per_step * 1e6:>10.1f}{best[label] / raw:>9.1f}")


if __name__ == "__main__":
    main()
