"""Detached runs per second: one worker on SQLite, and 1, 2 and 4 workers on one
PostgreSQL, in one run; and the durable log's cost per step on each backend.

Workload: a 4-step sequential crew against an OpenAI-compatible server on 127.0.0.1
(tests/openai_server.py, its own process) that answers every call after 20 ms.
For each variant a fresh store gets ``--runs-per-worker`` x workers queued runs
(enough to keep every worker busy), then the workers (``pilothouse worker -c C
--once``, separate processes, standing for machines) drain the queue. Throughput is
counted from the first run's start to the last run's end, as the log records them
(process start-up is not the work). PostgreSQL 16 comes from the pgserver wheel,
started here. The log's cost per step is bench_core's measure (in-process fake
model, sequential runs, every step committed before the next) on each backend.

Usage: python bench/bench_scale.py [--runs-per-worker N] [--concurrency C] [--latency S]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

#: a crew of 4 personas in sequence, as a crew file
CREW = '[flow]\nsteps = ["a", "b", "c", "d"]\n' + "".join(
    f'[personas.{name}]\ninstructions = "You are persona {name}: answer briefly."\n'
    for name in "abcd"
)


def model_server(latency: float) -> tuple[subprocess.Popen, str]:
    """The fake OpenAI server in a process of its own, and its URL."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from openai_server import FakeOpenAI, serve\n"
        "app = FakeOpenAI(); app.latency = float(sys.argv[2])\n"
        "with serve(app) as url:\n"
        "    print(url, flush=True); sys.stdin.read()\n"
    )
    server = subprocess.Popen([sys.executable, "-c", code, str(HERE.parent / "tests"),
                               str(latency)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def environment(workspace: Path, model_url: str, store_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    env.update(
        PILOTHOUSE_WORKSPACE=str(workspace / ".pilothouse"),
        PILOTHOUSE_ENDPOINTS__LOCAL__BASE_URL=model_url,
        PILOTHOUSE_DEFAULT_MODEL="local:fake",
    )
    if store_url:
        env["PILOTHOUSE_STORE_URL"] = store_url
    return env


def throughput(workspace: Path, env: dict[str, str], workers: int, runs: int,
               concurrency: int) -> float:  # fmt: skip
    """Queue ``runs``, let ``workers`` drain them; runs per second of the work itself."""
    import pilothouse
    from pilothouse.store.open import open_store

    settings = pilothouse.load_settings(workspace=workspace / ".pilothouse",
                                        store_url=env.get("PILOTHOUSE_STORE_URL"))  # fmt: skip
    queue = pilothouse.Runtime(settings)
    try:
        for i in range(runs):
            queue.queue(str(workspace / "crews" / "bench.toml"), f"job {i}")
    finally:
        queue.store.close()  # type: ignore[union-attr]
    command = [sys.executable, "-m", "pilothouse", "worker", "-c", str(concurrency), "--once"]
    started = [
        subprocess.Popen(command, cwd=workspace, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]  # fmt: skip
    for process in started:
        _, err = process.communicate(timeout=1200)
        assert process.returncode == 0, err[-2000:]
    store = open_store(settings)
    try:
        summaries = store.list_runs(limit=runs + 10)
        assert len(summaries) == runs and {s.status for s in summaries} == {"succeeded"}
        starts = [store.events(s.id)[1].ts for s in summaries]  # run_started after run_queued
        ends = [s.updated for s in summaries]
    finally:
        store.close()
    return runs / (max(ends) - min(starts))


async def log_cost(store_url: str | None, folder: str, runs: int) -> float:
    """µs per step of sequential runs, in-process fake model, log on this backend."""
    import bench_core

    import pilothouse

    settings = pilothouse.load_settings(workspace=folder, default_model="fake:model",
                                        store_url=store_url)  # fmt: skip
    async with pilothouse.Runtime(settings, plugins=[bench_core.FakePlugin()]) as rt:
        await rt.run(bench_core.CREW, "warm-up")
        started = time.perf_counter()
        for i in range(runs):
            await rt.run(bench_core.CREW, f"task {i}")
        return (time.perf_counter() - started) / (runs * bench_core.STEPS) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-per-worker", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--log-runs", type=int, default=300)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        os.environ.setdefault("XDG_RUNTIME_DIR", folder)  # before pgserver: it asks for one
        import pgserver
        import psycopg

        server = pgserver.get_server(root / "pg", cleanup_mode="stop")
        admin = server.get_uri()
        model, model_url = model_server(args.latency)
        results: list[tuple[str, float]] = []
        try:
            for backend, workers in (("sqlite", 1), ("postgres", 1), ("postgres", 2),
                                     ("postgres", 4)):  # fmt: skip
                workspace = root / f"{backend}-{workers}"
                (workspace / "crews").mkdir(parents=True)
                (workspace / "crews" / "bench.toml").write_text(CREW)
                store_url = None
                if backend == "postgres":
                    with psycopg.connect(admin, autocommit=True) as db:
                        db.execute(f"CREATE DATABASE w{workers}")
                    store_url = admin.replace("/postgres?", f"/w{workers}?")
                env = environment(workspace, model_url, store_url)
                runs = args.runs_per_worker * workers
                rate = throughput(workspace, env, workers, runs, args.concurrency)
                results.append((f"{backend}, {workers} worker(s), {runs} runs", rate))
            with psycopg.connect(admin, autocommit=True) as db:
                db.execute("CREATE DATABASE logcost")
            pg_log = anyio.run(log_cost, admin.replace("/postgres?", "/logcost?"),
                               str(root / "pg-log"), args.log_runs)  # fmt: skip
            sqlite_log = anyio.run(log_cost, None, str(root / "sqlite-log"), args.log_runs)
        finally:
            assert model.stdin is not None
            model.stdin.close()
            model.wait(timeout=30)
            server.cleanup()

    print(f"detached runs of a 4-step crew, model server {args.latency * 1000:g} ms per call,"
          f" --concurrency {args.concurrency} per worker")  # fmt: skip
    print(f"{'variant':<40}{'runs/s':>9}{'x pg 1':>9}{'x sqlite':>10}")
    sqlite_rate = results[0][1]
    pg_one = results[1][1]
    for label, rate in results:
        print(f"{label:<40}{rate:>9.1f}{rate / pg_one:>9.2f}{rate / sqlite_rate:>10.2f}")
    print(f"durable log, sequential, in-process fake model: SQLite {sqlite_log:.0f} us/step,"
          f" PostgreSQL {pg_log:.0f} us/step ({pg_log / sqlite_log:.1f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
