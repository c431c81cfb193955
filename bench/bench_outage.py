"""How the fleet rides out its database: PostgreSQL stopped at once (a crash, a failover)
in the middle of a steady batch and started again on the same address.

Workload: two ``pilothouse worker`` processes (standing for machines) drain a queue of
4-step runs against an OpenAI-compatible server on 127.0.0.1 (tests/openai_server.py,
its own process, 20 ms a call). PostgreSQL 16 comes from the pgserver wheel, on TCP,
with ``track_commit_timestamp`` on: every time below is the server's own clock of when
a transaction committed, so nothing is timed by a poller's luck.

Measured, in one run:

- **recovery**: from the server starting again (``pg_postmaster_start_time()``) to
  the fleet's first committed event, beside the raw floor: a bare psycopg loop that
  inserts a row every 5 ms and reconnects as soon as it can;
- **throughput**: runs that ended per second in the window after the restart against
  the window before the crash (by their ``run_finished`` event's commit time);
- **lost work**: steps finished twice, failed runs, workers that exited (all 0).

Usage: python bench/bench_outage.py [--window S] [--down S] [--concurrency C] [--runs N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bench_scale import CREW, environment, model_server  # noqa: E402

#: the commit time of a row, in seconds since the epoch
COMMITTED = "EXTRACT(EPOCH FROM pg_xact_commit_timestamp(xmin))"


class RawWriter(threading.Thread):
    """The floor: insert a row every 5 ms; reconnect at once when the connection is lost."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stopping = threading.Event()

    def run(self) -> None:
        import psycopg

        conn = None
        while not self.stopping.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
                conn.execute("INSERT INTO raw VALUES (1)")
            except psycopg.Error:
                conn = None
            time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=float, default=20.0, help="seconds before / after")
    parser.add_argument("--down", type=float, default=3.0, help="seconds the database is down")
    parser.add_argument("--concurrency", type=int, default=8, help="runs at once per worker")
    parser.add_argument("--runs", type=int, default=4000, help="runs queued (enough to last)")
    args = parser.parse_args()

    import psycopg

    import pilothouse
    from pg_outage import RestartablePostgres

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        server = RestartablePostgres(options="-c track_commit_timestamp=on")
        model, model_url = model_server(0.02)
        workers: list[subprocess.Popen] = []
        raw: RawWriter | None = None
        try:
            url = server.database()
            workspace = root / "fleet"
            (workspace / "crews").mkdir(parents=True)
            (workspace / "crews" / "bench.toml").write_text(CREW)
            env = environment(workspace, model_url, url)
            settings = pilothouse.load_settings(workspace=workspace / ".pilothouse",
                                                store_url=url)  # fmt: skip
            queue = pilothouse.Runtime(settings)
            try:
                for i in range(args.runs):
                    queue.queue(str(workspace / "crews" / "bench.toml"), f"job {i}")
            finally:
                queue.store.close()  # type: ignore[union-attr]
            with psycopg.connect(url, autocommit=True) as db:
                db.execute("CREATE TABLE raw (x INTEGER)")
            raw = RawWriter(url)
            raw.start()
            command = [sys.executable, "-m", "pilothouse", "worker", "-c", str(args.concurrency)]
            logs = [open(root / f"worker-{i}.log", "w") for i in range(2)]  # noqa: SIM115
            workers = [subprocess.Popen(command, cwd=workspace, env=env, stdout=log,
                                        stderr=subprocess.STDOUT) for log in logs]  # fmt: skip
            time.sleep(3 + args.window)  # the workers settle, then the window before
            server.crash()
            time.sleep(args.down)
            server.start()
            time.sleep(args.window + 1)
            alive = all(w.poll() is None for w in workers)
            with psycopg.connect(url) as db:
                (started,) = db.execute(
                    "SELECT EXTRACT(EPOCH FROM pg_postmaster_start_time())"
                ).fetchone()
                (crashed,) = db.execute(
                    f"SELECT MAX({COMMITTED}) FROM events WHERE {COMMITTED} < %s", (started,)
                ).fetchone()
                (fleet_back,) = db.execute(
                    f"SELECT MIN({COMMITTED}) FROM events WHERE {COMMITTED} > %s", (started,)
                ).fetchone()
                (raw_back,) = db.execute(
                    f"SELECT MIN({COMMITTED}) FROM raw WHERE {COMMITTED} > %s", (started,)
                ).fetchone()

                def ended(start: float, end: float) -> int:
                    return db.execute(
                        f"SELECT COUNT(*) FROM events WHERE type = 'run_finished'"
                        f" AND {COMMITTED} > %s AND {COMMITTED} <= %s", (start, end)
                    ).fetchone()[0]  # fmt: skip

                before = ended(float(crashed) - args.window, float(crashed)) / args.window
                after = ended(float(started), float(started) + args.window) / args.window
                twice = db.execute(
                    "SELECT COUNT(*) FROM (SELECT run_id, step_id FROM events WHERE type ="
                    " 'step_finished' GROUP BY run_id, step_id HAVING COUNT(*) > 1) AS t"
                ).fetchone()[0]
                failed = db.execute("SELECT COUNT(*) FROM runs WHERE status = 'failed'"
                                    ).fetchone()[0]  # fmt: skip
        finally:
            if raw is not None:
                raw.stopping.set()
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(timeout=120)
            said = [line for p in root.glob("worker-*.log") for line in p.read_text().splitlines()
                    if line.startswith("pilothouse:")]  # fmt: skip
            assert model.stdin is not None
            model.stdin.close()
            model.wait(timeout=30)
            server.close()

    fleet_s = float(fleet_back) - float(started)
    raw_s = float(raw_back) - float(started)
    print(
        f"2 workers x {args.concurrency} runs at once, 4-step runs, model 20 ms a call;"
        f" PostgreSQL down {args.down:g} s (immediate shutdown), windows of {args.window:g} s"
    )
    print(f"server started -> first committed event: fleet {fleet_s:.2f} s, raw psycopg loop"
          f" {raw_s:.2f} s (fleet - raw: {fleet_s - raw_s:+.2f} s)")  # fmt: skip
    print(f"runs/s in the window before {before:.1f}, after {after:.1f}:"
          f" after/before {after / before:.2f}x")  # fmt: skip
    print(f"workers alive: {alive}; steps finished twice: {twice}; failed runs: {failed}")
    print("what the workers said:")
    for line in said:
        print(f"  {line[:160]}")


if __name__ == "__main__":
    main()
