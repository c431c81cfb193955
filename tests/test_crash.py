"""Crash tests that are real: runner processes killed with SIGKILL, then resumed."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import finished_steps, wait_for_inbox

pytestmark = pytest.mark.slow

CREW = """
[flow]
steps = ["a", "b", "c", "d"]
[limits]
max_step_interruptions = 50
[personas.a]
instructions = "You are the first."
[personas.b]
instructions = "You are the second."
[personas.c]
instructions = "You are the third."
[personas.d]
instructions = "You are the fourth."
"""

START = textwrap.dedent(
    """
    import anyio, sys, pilothouse
    async def main():
        async with pilothouse.Runtime() as rt:
            async with anyio.create_task_group() as tg:
                for i in range(int(sys.argv[1])):
                    tg.start_soon(lambda i=i: rt.run("slow", f"task {i}", run_id=f"crash-{i}"))
    anyio.run(main)
    """
)


def _env(delay_ms: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    env["PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS"] = str(delay_ms)
    return env


def _workspace(folder):
    (folder / "crews").mkdir(parents=True)
    (folder / "crews" / "slow.toml").write_text(CREW)
    return folder


def _query(folder, sql, args=()):
    db = sqlite3.connect(folder / ".pilothouse" / "runs.db", timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def _logged(folder) -> int:
    """How many events the crashing workspace's log holds (0 before it has a table)."""
    if not (folder / ".pilothouse" / "runs.db").exists():
        return 0  # opening it here would make the file the runner is about to make
    try:
        return _query(folder, "SELECT COUNT(*) FROM events")[0][0]
    except sqlite3.OperationalError:  # no file or no table yet
        return 0


def _outputs(folder):
    return dict(_query(folder, "SELECT id, output FROM runs WHERE status = 'succeeded'"))


def test_runs_survive_random_sigkills(tmp_path):
    runs, max_kills, rng = 6, 10, random.Random(20261125)
    reference = _workspace(tmp_path / "reference")
    subprocess.run([sys.executable, "-c", START, str(runs)], cwd=reference, env=_env(0),
                   check=True, timeout=120)  # fmt: skip
    expected = _outputs(reference)
    assert len(expected) == runs

    folder = _workspace(tmp_path / "crashing")
    env = _env(500)
    resume = [sys.executable, "-m", "pilothouse", "resume", "--all", "--json"]
    command = [sys.executable, "-c", START, str(runs)]
    killed = 0
    while killed < max_kills:
        # Each kill lands after a random number of newly committed events, read from
        # the log as it grows (not after a time, which a busy machine stretches): it
        # is always in the middle of the work, and every round moves the work on.
        target = _logged(folder) + rng.randint(1, 12)
        process = subprocess.Popen(command, cwd=folder, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while process.poll() is None and _logged(folder) < target:
            assert time.monotonic() < deadline, "the runner logged nothing for a minute"
            time.sleep(0.01)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.wait(timeout=30)
        states = _query(folder, "SELECT status FROM runs") if _logged(folder) else []
        if len(states) == runs:
            command = resume
            if all(s == "succeeded" for (s,) in states):
                break
    done = subprocess.run(resume, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    states = _query(folder, "SELECT id, status, error FROM runs")
    assert _outputs(folder) == expected, states  # every run ended, with the uninterrupted output
    for (run_id,) in _query(folder, "SELECT id FROM runs"):
        seqs = [s for (s,) in _query(folder, "SELECT seq FROM events WHERE run_id = ? ORDER BY seq",
                                     (run_id,))]  # fmt: skip
        assert seqs == list(range(1, len(seqs) + 1)), "an event is missing"
        finished = _query(
            folder,
            "SELECT step_id, COUNT(*) FROM events WHERE run_id = ? AND type = 'step_finished'"
            " GROUP BY step_id",
            (run_id,),
        )
        assert dict(finished) == {"1": 1, "2": 1, "3": 1, "4": 1}, "a step finished twice"
        ends = _query(folder, "SELECT COUNT(*) FROM events WHERE run_id = ? AND type ="
                              " 'run_finished'", (run_id,))  # fmt: skip
        assert ends == [(1,)]
    resumed = _query(folder, "SELECT COUNT(*) FROM events WHERE type = 'run_resumed'")[0][0]
    retried = _query(folder, "SELECT data FROM events WHERE type = 'run_resumed'")
    retries = sum(len(json.loads(d)["retried_steps"]) for (d,) in retried)
    print(
        f"\ncrash test: {killed} kills, {runs} runs, {runs * 4} steps, {resumed} resumes,"
        f" {retries} half-written steps retried, duplicates 0, lost 0"
    )
    assert killed >= 3 and resumed >= 3  # the kills did land in the middle of the work


def test_a_decision_made_while_the_runner_is_down_applies_on_resume(tmp_path):
    folder = tmp_path
    env = _env(0)
    run = [sys.executable, "-m", "pilothouse"]
    runner = subprocess.Popen([*run, "demo", "--wait", "600"], cwd=folder, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        waiting = wait_for_inbox(folder, env)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
    escalation = waiting[0]
    status = _query(folder, "SELECT status FROM runs WHERE id = ?", (escalation["run_id"],))
    assert status == [("waiting_for_human",)]
    inbox = subprocess.run([*run, "inbox"], cwd=folder, env=env, capture_output=True,
                           text=True, timeout=30).stdout  # fmt: skip
    assert "[stalled run: applies when a worker resumes it]" in inbox
    decided = subprocess.run(
        [*run, "approve", escalation["id"], "--by", "ana", "--note", "ok"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert decided.returncode == 0, decided.stderr
    assert "no process executes the run now: it applies when a worker resumes it" in (
        decided.stdout
    )
    resumed = subprocess.run([*run, "resume", escalation["run_id"], "--json"], cwd=folder,
                             env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)[0]
    assert result["status"] == "succeeded" and "designed to charge a phone" in result["output"]
    kinds = [t for (t,) in _query(folder, "SELECT type FROM events WHERE run_id = ? ORDER BY seq",
                                   (escalation["run_id"],))]  # fmt: skip
    assert kinds.count("escalation_raised") == 1 and kinds.count("escalation_decided") == 1
    assert "run_resumed" in kinds and kinds[-1] == "run_finished"


def test_a_killed_workers_queued_runs_are_resumed_by_the_next_worker(tmp_path):
    # A run a worker takes from the queue logs run_queued before run_started; resume
    # looked for run_started first in the log, so no such run could ever be resumed
    # (and the next worker counted it as done while it stayed 'running').
    folder = _workspace(tmp_path)
    run = [sys.executable, "-m", "pilothouse"]
    ids = []
    for i in range(2):
        queued = subprocess.run([*run, "run", "slow", "-i", f"job {i}", "--detach"],
                                cwd=folder, env=_env(0), capture_output=True, text=True,
                                timeout=60)  # fmt: skip
        ids.append(queued.stdout.strip())
    worker = subprocess.Popen([*run, "worker", "--concurrency", "2"], cwd=folder, env=_env(400),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        finished = 0
        while finished < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            finished = _query(folder, "SELECT COUNT(DISTINCT run_id) FROM events"
                                      " WHERE type = 'step_finished'")[0][0]  # fmt: skip
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    assert finished == 2, "the worker did not get through a step of each run"
    assert {s for (s,) in _query(folder, "SELECT status FROM runs")} == {"running"}
    done = subprocess.run([*run, "worker", "--once"], cwd=folder, env=_env(0),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "worker: 2 run(s) done" in done.stderr, done.stderr
    for run_id in ids:
        kinds = [t for (t,) in _query(folder, "SELECT type FROM events WHERE run_id = ?"
                                              " ORDER BY seq", (run_id,))]  # fmt: skip
        assert kinds[:2] == ["run_queued", "run_started"] and "run_resumed" in kinds
        assert kinds[-1] == "run_finished" and kinds.count("step_finished") == 4
    states = _query(folder, "SELECT status FROM runs")
    assert states == [("succeeded",), ("succeeded",)]


SUPERVISED = """
[flow]
type = "supervisor"
supervisor = "editor"
workers = ["pricing", "faults"]
[personas.editor]
instructions = "You run the desk."
[personas.pricing]
description = "Answers refunds, invoices and prices."
[personas.faults]
description = "Answers broken or leaking kettles."
"""


def test_a_supervised_run_killed_after_a_delegation_resumes_without_redoing_it(tmp_path):
    task = "A refund for a leaking kettle"
    start = [sys.executable, "-m", "pilothouse", "run", "desk", "-i", task, "--json"]
    outputs = {}
    for name, delay in (("reference", 0), ("crashing", 400)):
        folder = tmp_path / name
        (folder / "crews").mkdir(parents=True)
        (folder / "crews" / "desk.toml").write_text(SUPERVISED)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        process = subprocess.Popen(start, cwd=folder, env=_env(delay), **quiet)
        if delay:  # killed once the supervisor's first worker has reported
            deadline = time.monotonic() + 60
            while finished_steps(folder / ".pilothouse" / "runs.db") < 2:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            resumed = subprocess.run([sys.executable, "-m", "pilothouse", "resume", "--all"],
                                     cwd=folder, env=_env(0), capture_output=True, text=True,
                                     timeout=120)  # fmt: skip
            assert resumed.returncode == 0, resumed.stderr
            (retried,) = _query(folder, "SELECT data FROM events WHERE type = 'run_resumed'")
            assert json.loads(retried[0])["retried_steps"] == ["3"]  # only the unfinished one
        else:
            process.wait(timeout=120)
        outputs[name] = _outputs(folder)
        finished = _query(folder, "SELECT step_id, COUNT(*) FROM events"
                                  " WHERE type = 'step_finished' GROUP BY step_id")  # fmt: skip
        assert dict(finished) == {str(i): 1 for i in range(1, 6)}, "a step finished twice"
        handoffs = _query(folder, "SELECT data FROM events WHERE type = 'handoff' ORDER BY seq")
        assert [json.loads(d)["target"] for (d,) in handoffs] == ["faults", "pricing"]
    assert list(outputs["crashing"].values()) == list(outputs["reference"].values())
