"""The monitor at scale: 1,000 runs and 100,000 events in the store.

Measured in one run, against a raw baseline polling the same store the same way:

- load: time from starting the app to the fleet drawn;
- latency: a writer process appends an event every 100 ms to a running run;
  the time from the event's commit to the monitor having redrawn for it (the
  widgets updated; the terminal paints on its next frame), p50 and p95;
- idle CPU: the monitor's process CPU over 10 s with nothing being written.

Raw baseline: a thread running ``SELECT ... WHERE id > ?`` every 250 ms (the
monitor's poll interval) and nothing else: the floor for latency and idle CPU.

Usage: python bench/bench_tui.py [--runs 1000] [--events 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pilothouse.events import ModelCalled, RunStarted, StepFinished, StepStarted, log_entry
from pilothouse.model import Message, Usage
from pilothouse.store.sqlite import SQLiteRunStore
from pilothouse.tui import Feed, MonitorApp

POLL = 0.25


def fill(path: Path, runs: int, events: int) -> None:
    """``runs`` runs holding ``events`` events in all (model calls and steps)."""
    store = SQLiteRunStore(path)
    per_run = events // runs
    t0 = time.time() - 3000
    batch = []
    for i in range(runs):
        run_id = f"run{i:06d}"
        items = [RunStarted(run_id=run_id, crew=f"crew{i % 7}", input=f"brief {i}", flow="seq")]
        step = 0
        while len(items) < per_run:
            step += 1
            sid = str(step)
            items += [
                StepStarted(run_id=run_id, step_id=sid, persona="writer", input="x", model="m"),
                ModelCalled(
                    run_id=run_id,
                    step_id=sid,
                    model="m",
                    messages=[Message(role="user", content="hello " * 20)],
                    text="answer " * 20,
                    usage=Usage(input_tokens=40, output_tokens=20),
                ),
                StepFinished(run_id=run_id, step_id=sid, persona="writer", output="answer"),
            ]
        for seq, e in enumerate(items[:per_run], start=1):
            e.seq, e.ts = seq, t0 + i + seq * 0.001
            batch.append(log_entry(e))
        if len(batch) >= 5000:
            store.write(batch)
            batch = []
    store.write(batch)
    store.close()


def writer(path: str, run_id: str, count: int, interval: float) -> None:
    """Another process: a live run gaining an event every ``interval`` seconds."""
    store = SQLiteRunStore(path)
    first = RunStarted(run_id=run_id, seq=1, ts=time.time(), crew="live", input="go", flow="seq")
    store.write([log_entry(first)])
    for seq in range(2, count + 2):
        time.sleep(interval)
        e = StepStarted(
            run_id=run_id,
            seq=seq,
            ts=time.time(),
            step_id=str(seq),
            persona="writer",
            input="x",
            model="m",
        )
        store.write([log_entry(e)])
    store.close()


def start_writer(path: Path, run_id: str, samples: int) -> subprocess.Popen:
    """The writer in a process of its own (as a runner would be)."""
    command = [sys.executable, __file__, "--writer", str(path), run_id, str(samples)]
    return subprocess.Popen(command)


class TimedMonitor(MonitorApp):
    """The monitor, noting when each event of the live run has been drawn."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.latencies: list[float] = []

    def refresh_views(self, changes=None) -> None:
        super().refresh_views(changes)
        now = time.time()
        for stored in changes.events if changes else []:
            if stored.event.run_id == "live-run":
                self.latencies.append(now - stored.event.ts)


def raw_poll(path: Path, stop: threading.Event, latencies: list[float]) -> None:
    db = sqlite3.connect(path)
    last = db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
    while not stop.wait(POLL):
        for row_id, data in db.execute("SELECT id, data FROM events WHERE id > ?", (last,)):
            last = row_id
            event = json.loads(data)
            if event["run_id"] == "live-raw":
                latencies.append(time.time() - event["ts"])
    db.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def monitor(path: Path, samples: int) -> tuple[float, list[float], float]:
    app = TimedMonitor(Feed(path), poll_interval=POLL)
    started = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one("#runs")
        while table.row_count == 0:
            await pilot.pause(0.01)
        load = time.perf_counter() - started
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(10)
        idle = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        proc = start_writer(path, "live-run", samples)
        while len(app.latencies) < samples - 1 and proc.poll() is None:
            await pilot.pause(0.05)
        proc.wait(timeout=60)
        await pilot.pause(POLL * 2)
    return load, app.latencies, idle


def main() -> None:
    if sys.argv[1:2] == ["--writer"]:
        writer(sys.argv[2], sys.argv[3], int(sys.argv[4]), 0.1)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.db"
        fill(path, args.runs, args.events)
        load, latencies, idle = asyncio.run(monitor(path, args.samples))

        stop, raw = threading.Event(), []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        thread = threading.Thread(target=raw_poll, args=(path, stop, raw))
        thread.start()
        time.sleep(10)
        raw_idle = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        start_writer(path, "live-raw", args.samples).wait(timeout=60)
        time.sleep(POLL * 2)
        stop.set()
        thread.join()
    print(f"store: {args.runs} runs, {args.events:,} events; monitor polls every {POLL} s")
    print(f"load to fleet drawn: {load:.2f} s")
    ratio = statistics.median(latencies) / statistics.median(raw)
    print(
        f"event written -> shown: p50 {pct(latencies, 0.5):.0f} ms, p95 {pct(latencies, 0.95):.0f}"
        f" ms (n={len(latencies)}) | raw poll p50 {pct(raw, 0.5):.0f} ms, p95"
        f" {pct(raw, 0.95):.0f} ms | ratio p50 {ratio:.2f}x"
    )
    print(f"idle CPU: monitor {idle:.1%} of a core | raw poll {raw_idle:.2%}")


if __name__ == "__main__":
    main()
