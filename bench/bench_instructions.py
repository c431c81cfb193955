"""Framework cost per agent step in CPU instructions: bench_core's workload, counted.

Timings on a shared 2-core VM drift by tens of percent from one minute to the
next, so a 5% change cannot be seen in ``bench_core.py``. Instructions can: each
variant runs under valgrind's callgrind twice, with no runs and with ``--runs``
runs, in fresh processes, and the difference divided by the steps is the
user-space instructions one step costs, start-up and warm-up cancelled out.
With a fixed hash seed, the log-off count repeats to a few instructions; the
log-on count to ~1% (its commits are batched by the clock). What it does not
count: the kernel's side of system calls (SQLite's writes) and waiting for anything.

Variants (a 4-step sequential crew on an in-process fake model, as in bench_core):
raw awaited calls; raw calls + the SQLite commit this log makes per step (4 JSON
rows, (run, seq) index); pilothouse with the event log off; and with it on.

Needs valgrind (``apt install valgrind``). Takes a few minutes.
Usage: python bench/bench_instructions.py [--runs N] [--only 'log off']
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_core as core  # noqa: E402  (the workload and its variants)

#: label -> (bench_core coroutine function, its arguments after ``runs``)
VARIANTS = {
    "raw awaited calls": ("time_raw", (1,)),
    "raw calls + this log's commit shape per step": ("time_raw_commit", ("{tmp}", True)),
    "pilothouse, log off": ("time_pilothouse", (1, False, "{tmp}")),
    "pilothouse, log on (SQLite)": ("time_pilothouse", (1, True, "{tmp}")),
}

RAW_SCALE = 100


def child(label: str, runs: int) -> None:
    """Run one variant (in a process valgrind watches)."""
    import anyio

    name, args = VARIANTS[label]
    with tempfile.TemporaryDirectory() as tmp:
        filled = [a.format(tmp=tmp) if isinstance(a, str) else a for a in args]
        anyio.run(getattr(core, name), runs, *filled)


def counted(label: str, runs: int) -> subprocess.Popen[str]:
    """Start ``label`` under callgrind; its stderr ends with the instruction total."""
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    return subprocess.Popen(
        [*valgrind, sys.executable, __file__, "--child", label, str(runs)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # string hashing is salted per process; a fixed seed gives every run the same
        # dict and set layouts, hence the same count
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def instructions(process: subprocess.Popen[str]) -> int:
    """The total callgrind reports for a finished process."""
    _, err = process.communicate(timeout=1800)
    found = re.search(r"Collected : (\d+)", err)
    if process.returncode != 0 or found is None:
        raise SystemExit(f"a counted run failed:\n{err[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="runs counted per variant")
    parser.add_argument(
        "--only", default="", help="count only the variants whose label contains this"
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("bench_instructions needs valgrind on PATH (apt install valgrind)")

    per_step: dict[str, float] = {}
    # the raw baseline is always counted: every ratio is against it
    for label in [v for v in VARIANTS if v == "raw awaited calls" or args.only in v]:
        # both processes at once: one per core
        # the raw loop costs a few hundred instructions a step: with as few runs as
        # the others, start-up noise (~1k) would swamp it
        runs = args.runs * (RAW_SCALE if label == "raw awaited calls" else 1)
        empty, full = counted(label, 0), counted(label, runs)
        steps = runs * core.STEPS
        per_step[label] = (instructions(full) - instructions(empty)) / steps

    raw = per_step["raw awaited calls"]
    print(f"{core.STEPS}-step sequential crew, in-process fake model; user-space"
          f" instructions per step (callgrind, {args.runs} runs)")  # fmt: skip
    print(f"{'variant':<46}{'instr/step':>12}{'x raw':>9}")
    for label, count in per_step.items():
        print(f"{label:<46}{count:>12,.0f}{count / raw:>9.1f}")


if __name__ == "__main__":
    main()
