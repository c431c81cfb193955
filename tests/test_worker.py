"""Queued runs, the worker, and cancelling a run from another process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from command import ph

pytestmark = pytest.mark.slow

SLOW = """
[flow]
steps = ["a", "b", "c"]
[personas.a]
[personas.b]
[personas.c]
"""


def _types(folder, run_id):
    db = sqlite3.connect(folder / ".pilothouse" / "runs.db")
    try:
        return [t for (t,) in db.execute(
            "SELECT type FROM events WHERE run_id = ? ORDER BY seq", (run_id,))]  # fmt: skip
    finally:
        db.close()


def test_detached_runs_wait_in_the_queue_for_a_worker(tmp_path):
    ids = [json.loads(ph("run", "support", "-i", f"billing question {i}", "--detach", "--json",
                         cwd=tmp_path).stdout)["run_id"] for i in range(3)]  # fmt: skip
    queued = json.loads(ph("runs", "--status", "queued", "--json", cwd=tmp_path).stdout)
    assert sorted(r["id"] for r in queued) == sorted(ids)
    cancelled = ph("cancel", ids[0], cwd=tmp_path)
    assert cancelled.returncode == 0 and "cancelled: run" in cancelled.stdout
    done = ph("worker", "--once", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "worker: 2 run(s) done" in done.stderr
    runs = {r["id"]: r["status"] for r in json.loads(ph("runs", "--json", cwd=tmp_path).stdout)}
    assert runs == {ids[0]: "cancelled", ids[1]: "succeeded", ids[2]: "succeeded"}
    assert _types(tmp_path, ids[1])[:2] == ["run_queued", "run_started"]
    assert _types(tmp_path, ids[0]) == ["run_queued", "run_cancelled"]
    again = ph("cancel", ids[1], cwd=tmp_path)
    assert again.returncode == 3 and "has already succeeded" in again.stderr


def test_a_queued_run_whose_crew_is_gone_fails_instead_of_hanging(tmp_path):
    crews = tmp_path / ".pilothouse" / "crews"
    crews.mkdir(parents=True)
    (crews / "temp.toml").write_text('name = "temp"' + SLOW)
    queued = ph("run", "temp", "-i", "hello", "--detach", "--json", cwd=tmp_path)
    run_id = json.loads(queued.stdout)["run_id"]
    (crews / "temp.toml").unlink()  # deleted before a worker takes the run
    done = ph("worker", "--once", cwd=tmp_path)
    assert done.returncode == 0 and f"run {run_id}: no crew named 'temp'" in done.stderr
    (run,) = json.loads(ph("runs", "--json", cwd=tmp_path).stdout)
    assert (run["id"], run["status"]) == (run_id, "failed")  # it stayed 'running' for ever
    assert _types(tmp_path, run_id) == ["run_queued", "run_failed"]
    shown = ph("show", run_id, cwd=tmp_path).stdout
    assert "failed (not_found): no crew named 'temp'" in shown


def test_cancel_reaches_the_process_running_the_run(tmp_path):
    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "slow.toml").write_text(SLOW)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    env["PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS"] = "2000"
    runner = subprocess.Popen([sys.executable, "-m", "pilothouse", "run", "slow", "-i", "go",
                               "--json"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        running = []
        while not running and time.monotonic() < deadline:
            time.sleep(0.2)
            listed = ph("runs", "--status", "running", "--json", cwd=tmp_path)
            running = json.loads(listed.stdout) if listed.returncode == 0 else []
        assert running
        asked = time.monotonic()
        assert ph("cancel", running[0]["id"], cwd=tmp_path).returncode == 0
        out, _ = runner.communicate(timeout=30)
        took = time.monotonic() - asked
    finally:
        runner.kill()
    assert runner.returncode == 130
    assert json.loads(out)["status"] == "cancelled" and took < 5
    types = _types(tmp_path, running[0]["id"])
    assert types[-1] == "run_cancelled" and "run_finished" not in types


def test_a_run_a_live_process_executes_is_not_resumed_twice(tmp_path):
    from conftest import wait_for_inbox

    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    runner = subprocess.Popen([sys.executable, "-m", "pilothouse", "demo", "--wait", "600"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        run_id = wait_for_inbox(tmp_path, env)[0]["run_id"]
        busy = ph("resume", run_id, cwd=tmp_path)
        assert busy.returncode == 3 and f"run {run_id} is being executed by" in busy.stderr
        assert "nothing to resume" in ph("resume", "--all", cwd=tmp_path).stdout
    finally:
        runner.kill()
        runner.wait(timeout=30)
    # the process is gone: the run is an orphan now, which a cancel ends at once (no
    # process would act on a request); so there is nothing left to resume
    cancelled = ph("cancel", run_id, cwd=tmp_path)
    assert cancelled.returncode == 0 and cancelled.stdout.startswith(f"cancelled: run {run_id}")
    assert "nothing to resume" in ph("resume", "--all", cwd=tmp_path).stdout
    assert ph("inbox", cwd=tmp_path).stdout.strip() == "nothing waits for a decision"


def test_the_worker_resumes_orphaned_runs_at_start(tmp_path):
    import signal

    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "slow.toml").write_text(SLOW)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    env["PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS"] = "400"
    runner = subprocess.Popen([sys.executable, "-m", "pilothouse", "run", "slow", "-i", "go"],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "step_finished" not in _types_any(tmp_path):
            time.sleep(0.1)
        runner.send_signal(signal.SIGKILL)
    finally:
        runner.wait(timeout=30)
    (run,) = json.loads(ph("runs", "--json", cwd=tmp_path).stdout)
    assert run["status"] == "running" and run["steps"] >= 1
    done = ph("worker", "--once", cwd=tmp_path, env={"PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS": "0"})
    assert done.returncode == 0 and "worker: 1 run(s) done" in done.stderr
    (after,) = json.loads(ph("runs", "--json", cwd=tmp_path).stdout)
    assert after["status"] == "succeeded" and after["steps"] == 3
    assert _types(tmp_path, run["id"]).count("run_resumed") == 1


def _types_any(folder):
    path = folder / ".pilothouse" / "runs.db"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    try:
        return [t for (t,) in db.execute("SELECT type FROM events")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def test_a_run_taken_from_the_queue_by_a_process_that_died_starts_afresh(tmp_path):
    # Claimed (status running, a dead owner) but killed before run_started was logged.
    import anyio

    import pilothouse
    from pilothouse.store.lease import HOST
    from pilothouse.store.sqlite import SQLiteRunStore

    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "slow.toml").write_text(SLOW)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that is surely free
    settings = pilothouse.load_settings(workspace=tmp_path / ".pilothouse",
                                        crew_paths=[tmp_path / "crews"])  # fmt: skip

    async def main():
        async with pilothouse.Runtime(settings) as rt:
            run_id = rt.queue("slow", "job")
            other = SQLiteRunStore(rt.store.path, owner=f"{HOST}:{gone.pid}:x")
            try:
                (claimed,) = other.claim_queued(1)
            finally:
                other.close()
            assert claimed.id == run_id and rt.unfinished() == [run_id]
            assert await rt.work(once=True) == 1
            return rt.store.get_run(run_id), [e.type for e in rt.store.events(run_id)]

    summary, kinds = anyio.run(main)
    assert summary.status == "succeeded", summary.error
    assert kinds[:2] == ["run_queued", "run_started"] and kinds.count("step_finished") == 3


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_a_worker_suspends_its_runs_for_the_next_one(tmp_path, signum):
    # Before: Ctrl+C cancelled every run the worker had (ended, for good), and SIGTERM
    # killed it mid-step. Stopping a worker (a deploy, a restart) is not cancelling work.
    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "slow.toml").write_text(SLOW)
    ids = [ph("run", "slow", "-i", f"job {i}", "--detach", cwd=tmp_path).stdout.strip()
           for i in range(2)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    env["PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS"] = "2000"
    worker = subprocess.Popen(
        [sys.executable, "-m", "pilothouse", "worker", "--concurrency", "2"], cwd=tmp_path,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _started(tmp_path) < 2:
            time.sleep(0.05)
        worker.send_signal(signum)
        _, err = worker.communicate(timeout=30)  # it stops mid-step, not after the runs
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    assert "worker: stopping; 2 run(s) suspended for the next worker to resume" in err
    db = sqlite3.connect(tmp_path / ".pilothouse" / "runs.db")
    try:
        rows = db.execute("SELECT status, owner FROM runs").fetchall()
    finally:
        db.close()
    assert rows == [("running", None), ("running", None)]  # unfinished, and free to take
    for run_id in ids:
        assert _types(tmp_path, run_id)[-1] == "run_suspended"
    shown = ph("show", ids[0], cwd=tmp_path).stdout
    assert f"suspended: worker stopped ({signal.Signals(signum).name})" in shown
    done = ph("worker", "--once", cwd=tmp_path)
    assert "worker: 2 run(s) done" in done.stderr, done.stderr
    for run_id in ids:
        kinds = _types(tmp_path, run_id)
        assert kinds[-1] == "run_finished" and kinds.count("step_finished") == 3
        assert kinds.index("run_suspended") < kinds.index("run_resumed")


def _started(folder) -> int:
    """How many runs have a step under way."""
    path = folder / ".pilothouse" / "runs.db"
    if not path.exists():
        return 0
    db = sqlite3.connect(path, timeout=30)
    try:
        query = "SELECT COUNT(DISTINCT run_id) FROM events WHERE type = 'step_started'"
        return db.execute(query).fetchone()[0]
    finally:
        db.close()
