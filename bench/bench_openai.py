"""pilothouse against an OpenAI-compatible server vs a raw httpx loop, in one run.

The server (tests/openai_server.py, uvicorn) runs in its own process on
127.0.0.1 and answers every call after 20 ms. Each variant runs in a fresh
process, so its CPU time and peak memory are its own:

- raw: N concurrent runs of 4 sequential POSTs each, one shared AsyncClient of
  httpx2 (the client the provider uses: the baseline of the ratios), and the
  same loop on httpx 0.28 for reference;
- pilothouse: N concurrent runs of a 4-persona sequential crew on the same
  server through the openai provider (log on: SQLite), non-streaming like raw,
  and streaming; ``log-off`` is the same without a run store (the provider and
  the engine alone).

Prints runs/s, client CPU ms per run, peak RSS, and ratios to raw: medians of
``--repeats`` rounds that run every variant in turn (this machine drifts by
tens of percent between runs of the same code). The reference client, httpx
0.28, is only measured at N <= 200 (at 1,000 it takes minutes). The clocks
start once a variant is set up (imports, the client or the Runtime made), so
the numbers are the steady-state cost of N runs, not of starting a process;
the one-time setup is printed apart.
Usage: python bench/bench_openai.py [--n 200 1000] [--latency 0.02] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = 4
#: the endpoint's concurrency limit (requests in flight, pool size)
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))


def serve(latency: float) -> None:
    """Child process: run the fake server, print its URL, stop when stdin closes."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from openai_server import FakeOpenAI
    from openai_server import serve as run_server

    app = FakeOpenAI()
    app.latency = latency
    with run_server(app) as url:
        print(url, flush=True)
        sys.stdin.read()


class Clock:
    """CPU and wall time from when a variant is ready (set up) to its end."""

    def __init__(self) -> None:
        self.cpu0 = self.wall0 = 0.0
        self.setup_cpu = time.process_time()

    def start(self) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        self.setup_cpu = self.cpu0 - self.setup_cpu


async def raw(url: str, n: int, clock: Clock, client_module: str = "httpx") -> None:
    import importlib

    import anyio

    httpx = importlib.import_module(client_module)

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        clock.start()

        async def one(i: int) -> None:
            text = f"task {i}"
            for step in range(STEPS):
                body = {
                    "model": "bench",
                    "messages": [
                        {"role": "system", "content": f"You are p{step}."},
                        {"role": "user", "content": text},
                    ],
                    "max_tokens": 256,
                }
                response = await client.post("/chat/completions", json=body)
                response.raise_for_status()
                text = response.json()["choices"][0]["message"]["content"]

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)


async def pilothouse_runs(url: str, n: int, clock: Clock, stream: bool, log: bool) -> None:
    import anyio

    import pilothouse

    workspace = tempfile.mkdtemp()
    settings = pilothouse.load_settings(
        workspace=workspace,
        endpoints={"bench": {"base_url": url, "stream": stream, "max_concurrency": CONCURRENCY}},
        default_model="bench:bench",
    )
    crew = pilothouse.Crew.model_validate(
        {
            "name": "bench",
            "flow": {"type": "sequential", "steps": [f"p{i}" for i in range(STEPS)]},
            "personas": {
                f"p{i}": {"instructions": f"You are p{i}.", "max_output_tokens": 256}
                for i in range(STEPS)
            },
        }
    )
    async with pilothouse.Runtime(settings, log_events=log) as rt:
        results = []
        clock.start()

        async def one(i: int) -> None:
            results.append(await rt.run(crew, f"task {i}"))

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
    failed = [r for r in results if not r.ok]
    assert not failed, failed[0].error


def variant(name: str, url: str, n: int) -> None:
    """Child process: run one variant, print its measurements as JSON."""
    import anyio

    clock = Clock()
    if name.startswith("raw"):
        anyio.run(raw, url, n, clock, "httpx" if name == "raw-httpx-0.28" else "httpx2")
    else:
        anyio.run(pilothouse_runs, url, n, clock, name == "pilothouse-stream", name != "log-off")
    wall = time.perf_counter() - clock.wall0
    cpu = time.process_time() - clock.cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"runs_s": n / wall, "cpu_ms_per_run": cpu * 1000 / n, "peak_mb": peak,
                      "setup_cpu_ms": clock.setup_cpu * 1000}))  # fmt: skip


def child(name: str, url: str, n: int) -> dict[str, float]:
    """Run one variant in a fresh process and return its measurements."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", name, url, str(n)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=3, help="medians of this many runs")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.latency)
        return
    if args.child:
        variant(args.child[0], args.child[1], int(args.child[2]))
        return

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--latency", str(args.latency)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        print(
            f"{STEPS}-call runs against an OpenAI-compatible server on 127.0.0.1,"
            f" {args.latency * 1000:.0f} ms per call (server in its own process)"
        )
        print(
            f"{'N':>5} {'variant':<20}{'runs/s':>9}{'CPU ms/run':>12}{'peak MB':>9}"
            f"{'x raw runs/s':>14}{'x raw CPU':>11}{'setup CPU ms':>14}"
        )
        for n in args.n:
            names = ["raw", "pilothouse", "log-off", "pilothouse-stream"]
            if n <= 200:  # the reference client is too slow to wait for at larger N
                names.insert(1, "raw-httpx-0.28")
            samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
            for _ in range(args.repeats):  # interleaved, so that drift hits every variant
                for name in names:
                    samples[name].append(child(name, url, n))
            rows = {name: _median(runs) for name, runs in samples.items()}
            base = rows["raw"]
            for name, r in rows.items():
                print(
                    f"{n:>5} {name:<20}{r['runs_s']:>9.1f}{r['cpu_ms_per_run']:>12.2f}"
                    f"{r['peak_mb']:>9.0f}{r['runs_s'] / base['runs_s']:>14.2f}"
                    f"{r['cpu_ms_per_run'] / base['cpu_ms_per_run']:>11.2f}"
                    f"{r['setup_cpu_ms']:>14.0f}"
                )
    finally:
        server.stdin.close()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
