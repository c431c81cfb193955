"""What OpenTelemetry export costs per step: the same crew with the event log on, with the
exporter sending to a local OTLP/HTTP receiver, to one that is down (answers 503), and
without it, in one run.

Workload: bench_core's 4-step sequential crew on an in-process model that answers at
once (the worst case: no model time to hide the export behind). The receiver is the
tests' (tests/otlp_receiver.py) on 127.0.0.1, decoding every payload. Each figure is
the best of ``--repeats`` interleaved rounds.

Usage: python bench/bench_otel.py [--runs 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bench_core import CREW, STEPS, FakePlugin  # noqa: E402
from otlp_receiver import OTLPReceiver  # noqa: E402

import pilothouse  # noqa: E402
from openai_server import serve  # noqa: E402


async def timed(runs: int, folder: str) -> float:
    """Seconds per step for ``runs`` sequential runs."""
    settings = pilothouse.load_settings(workspace=tempfile.mkdtemp(dir=folder),
                                        default_model="fake:model")  # fmt: skip
    async with pilothouse.Runtime(settings, plugins=[FakePlugin()]) as rt:
        await rt.run(CREW, "warm-up")
        start = time.perf_counter()
        for i in range(runs):
            await rt.run(CREW, f"task {i}")
        elapsed = time.perf_counter() - start
    return elapsed / (runs * STEPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    receiver = OTLPReceiver()
    best = {
        "log on, no exporter": float("inf"),
        "log on, OTLP exporter": float("inf"),
        "log on, receiver down": float("inf"),
    }
    with serve(receiver) as url, tempfile.TemporaryDirectory() as folder:
        endpoint = url.removesuffix("/v1")
        for _ in range(args.repeats):
            for label in best:
                os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
                if "no exporter" not in label:
                    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
                receiver.status = 503 if "down" in label else 200
                gc.collect()
                best[label] = min(best[label], anyio.run(timed, args.runs, folder))
    base = best["log on, no exporter"]
    print(f"{args.runs} sequential runs of {STEPS} steps; best of {args.repeats} rounds")
    print(f"{'variant':<28}{'us/step':>10}{'x base':>9}")
    for label, value in best.items():
        print(f"{label:<28}{value * 1e6:>10.1f}{value / base:>9.2f}")
    print(f"spans received: {len(receiver.spans)} (expected {args.repeats * (args.runs + 1) * 9})")


if __name__ == "__main__":
    main()
