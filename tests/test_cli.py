"""The CLI, run as a subprocess the way a person (or a script) runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from command import ph

from conftest import finished_steps

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """One demo run shared by the read-only tests."""
    folder = tmp_path_factory.mktemp("demo")
    done = ph("demo", "--wait", "0", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder, done


def test_demo_runs_offline_and_says_where_the_log_is(demo_dir):
    folder, done = demo_dir
    assert "succeeded: run " in done.stderr
    assert "offline:default (offline)" in done.stderr
    assert "guardrail risky_claims: flag absolute claims: 'guaranteed'" in done.stderr
    assert "log: .pilothouse/runs.db" in done.stderr
    assert "Compliance reviewer notes on:" in done.stdout
    assert "[helio-product-sheet#1]" in done.stdout  # the output cites its passages
    assert (folder / ".pilothouse" / "runs.db").is_file()


def test_runs_json_and_show(demo_dir):
    folder, _ = demo_dir
    runs = json.loads(ph("runs", "--json", cwd=folder).stdout)
    assert len(runs) == 1
    run = runs[0]
    assert (run["crew"], run["status"], run["steps"]) == ("marketing", "succeeded", 4)
    shown = ph("show", run["id"][:5], cwd=folder)
    assert shown.returncode == 0
    out = shown.stdout
    for persona in ("researcher", "analyst", "creative", "compliance"):
        assert f"  {persona}  offline:default (offline)" in out
    assert "retrieval demo_corpus: 5 passages" in out
    assert "tool market_size(" in out
    assert "guardrail risky_claims (output): flag" in out
    events = json.loads(ph("show", run["id"], "--json", cwd=folder).stdout)["events"]
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    listing = ph("runs", "--status", "failed", cwd=folder)
    assert listing.stdout.strip() == "no runs"


def test_run_with_model_override_and_json(tmp_path):
    done = ph(
        "run",
        "support",
        "--input",
        "-",
        "--model",
        "offline:fast",
        "--json",
        cwd=tmp_path,
        stdin="My invoice is wrong, billing please",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["crew"] == "support"
    show = json.loads(ph("show", result["run_id"], "--json", cwd=tmp_path).stdout)
    models = {e["model"] for e in show["events"] if e["type"] == "model_call"}
    assert models == {"offline:fast"}


CREW_LIMIT = """
[flow]
steps = ["a", "b", "c"]
[limits]
max_steps = 2
[personas.a]
[personas.b]
[personas.c]
"""

CREW_BLOCK = """
[flow]
steps = ["a"]
[personas.a]
instructions = "You are a. Repeat the task."
[personas.a.guardrails]
input = ["no_secrets"]
"""


@pytest.mark.parametrize(
    ("args", "files", "code", "message"),
    [
        (["run", "nope", "-i", "x"], {}, 3, "no crew named 'nope' (available: launch-review,"),
        (["run", "marketing", "-i", "x", "-m", "nosuch:model"], {}, 3, "no model named 'nosuch'"),
        (
            ["run", "crews/bad.toml", "-i", "x"],
            {"crews/bad.toml": "[flow]\nsteps = 3\n"},
            3,
            "crews/bad.toml:2 [flow.steps]: Input should be a valid list",
        ),
        (["run", "lim", "-i", "x"], {"crews/lim.toml": CREW_LIMIT}, 4, "limit max_steps"),
        (
            ["run", "blk", "-i", "key sk-abcdefghijklmnopqrstuv"],
            {"crews/blk.toml": CREW_BLOCK},
            5,
            "blocked by guardrail 'no_secrets'",
        ),
        (["show", "123"], {}, 3, "no run store at .pilothouse/runs.db"),
        (["run", "marketing"], {}, 2, "Missing option '--input'"),
        (["run", "marketing", "-i", " \n"], {}, 2, "the input is empty: give --input TEXT"),
        (["config"], {"pilothouse.toml": "synchronous = 3\n"}, 3, "synchronous (pilothouse.toml)"),
    ],
)
def test_errors_have_messages_and_exit_codes(tmp_path, args, files, code, message):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    done = ph(*args, cwd=tmp_path)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_blocked_run_does_not_echo_the_secret(tmp_path):
    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "blk.toml").write_text(CREW_BLOCK)
    done = ph("run", "blk", "-i", "key sk-abcdefghijklmnopqrstuv", cwd=tmp_path)
    assert done.returncode == 5
    assert "the text contains a credential" in done.stderr


def test_config_shows_sources_and_masks_secrets(tmp_path):
    (tmp_path / "pilothouse.toml").write_text('default_model = "offline:cfg"\n')
    done = ph("config", "--json", cwd=tmp_path, env={"PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS": "3"})
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert rows["default_model"] == {
        "name": "default_model",
        "value": '"offline:cfg"',  # as TOML writes it
        "source": "pilothouse.toml",
    }
    assert rows["plugins.offline.delay_ms"]["source"] == "env PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS"
    assert rows["workspace"]["source"] == "default"


def test_a_crew_naming_a_missing_part_fails_before_it_starts(tmp_path):
    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "gap.toml").write_text(
        '[flow]\nsteps = ["a", "ghost"]\n[personas.a]\ntools = ["teleport"]\n'
    )
    done = ph("run", "gap", "-i", "x", cwd=tmp_path)
    assert done.returncode == 3
    assert "crew 'gap', persona 'a': no tool named 'teleport'" in done.stderr
    assert (
        not (tmp_path / ".pilothouse" / "runs.db").exists()
        or "no runs" in ph("runs", cwd=tmp_path).stdout
    )


def test_crews_says_which_crews_cannot_run_and_why(tmp_path):
    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "broken.toml").write_text("[flow\n")
    (tmp_path / "crews" / "notool.toml").write_text(
        '[flow]\nsteps = ["a"]\n[personas.a]\ntools = ["nope"]\n'
    )
    listed = ph("crews", "--json", cwd=tmp_path)
    assert listed.returncode == 3  # a check of the crew files, for CI
    crews = {row["name"]: row for row in json.loads(listed.stdout)}
    assert "invalid TOML" in crews["broken"]["error"]
    assert "no tool named 'nope'" in crews["notool"]["error"]
    assert crews["marketing"]["error"] is None  # the others are still listed
    out = ph("crews", cwd=tmp_path).stdout
    assert "cannot run: crew 'notool', persona 'a': no tool named 'nope'" in out


def test_crews_lists_plugin_and_file_crews(tmp_path):
    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "mine.toml").write_text('[flow]\nsteps = ["a"]\n[personas.a]\n')
    (tmp_path / "crews" / "support.toml").write_text(
        '[flow]\nsteps = ["mine_only"]\n[personas.mine_only]\ninstructions = "Only mine."\n'
    )
    listed = ph("crews", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stdout
    crews = {row["name"]: row for row in json.loads(listed.stdout)}
    assert crews["marketing"]["origin"] == "plugin demo"
    assert crews["marketing"]["personas"] == ["researcher", "analyst", "creative", "compliance"]
    assert crews["mine"]["origin"] == "crews/mine.toml" and crews["mine"]["flow"] == "sequential"
    assert crews["support"]["origin"] == "crews/support.toml (overrides plugin demo)"
    assert not any(row["error"] for row in crews.values())
    out = ph("crews", cwd=tmp_path).stdout
    assert "support              sequential: mine_only  crews/support.toml" in out
    # and the file is what runs under that name, not the demo's handoff crew
    done = ph("run", "support", "-i", "hello", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = ph("show", json.loads(done.stdout)["run_id"], "--json", cwd=tmp_path)
    started = [e for e in json.loads(shown.stdout)["events"] if e["type"] == "step_started"]
    assert [e["persona"] for e in started] == ["mine_only"]


def test_ctrl_c_cancels_the_run_and_logs_it(tmp_path):
    import signal
    import time

    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "slow.toml").write_text(
        '[flow]\nsteps = ["a", "b", "c"]\n[personas.a]\n[personas.b]\n[personas.c]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PILOTHOUSE_")}
    env["PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS"] = "1500"
    process = subprocess.Popen(
        [sys.executable, "-m", "pilothouse", "run", "slow", "-i", "go"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    log = tmp_path / ".pilothouse" / "runs.db"
    deadline = time.monotonic() + 30
    while finished_steps(log) < 1:  # Ctrl+C in the middle of the second step
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    (run,) = json.loads(ph("runs", "--json", cwd=tmp_path).stdout)
    assert process.returncode == 130
    assert f"run slow {run['id']}" in err  # the id is shown as the run starts
    assert f"interrupted: run {run['id']} is cancelled" in err
    assert run["status"] == "cancelled"
    shown = json.loads(ph("show", run["id"], "--json", cwd=tmp_path).stdout)
    assert [e["type"] for e in shown["events"]].count("step_finished") == 1  # kept
    # an ended run is not resumed; the error says what can be done instead
    again = ph("resume", run["id"], cwd=tmp_path)
    assert again.returncode == 3
    assert f"run {run['id']} has ended (cancelled)" in again.stderr
    assert f"pilothouse replay {run['id']}" in again.stderr


def test_runs_and_show_say_which_runs_no_process_executes(tmp_path):
    from pilothouse.events import RunStarted, log_entry
    from pilothouse.store.lease import HOST
    from pilothouse.store.sqlite import SQLiteRunStore

    gone = subprocess.Popen(["true"])
    gone.wait()
    path = tmp_path / ".pilothouse" / "runs.db"
    for run_id, pid in (("dead-run", gone.pid), ("live-run", os.getpid())):
        store = SQLiteRunStore(path, owner=f"{HOST}:{pid}:x")
        started = RunStarted(run_id=run_id, seq=1, ts=1.0, crew="c", input="x",
                             flow="sequential")  # fmt: skip
        store.write([log_entry(started)])
        store.close()
    listed = ph("runs", cwd=tmp_path).stdout
    assert "dead-run     c               stalled" in listed
    assert "live-run     c               running" in listed
    assert "'pilothouse worker' or 'pilothouse resume --all' carries it on" in listed
    stalled = json.loads(ph("runs", "--status", "stalled", "--json", cwd=tmp_path).stdout)
    assert [(r["id"], r["status"], r["stalled"]) for r in stalled] == [
        ("dead-run", "running", True)
    ]
    shown = ph("show", "dead-run", cwd=tmp_path).stdout
    assert shown.startswith("run dead-run  crew c  stalled\n")
    # nobody would ever act on a cancel request for it: it is cancelled at once
    assert ph("cancel", "dead-run", cwd=tmp_path).stdout.startswith("cancelled: run dead-run")
    assert "cancel requested: run live-run" in ph("cancel", "live-run", cwd=tmp_path).stdout
    runs = {r["id"]: r["status"] for r in json.loads(ph("runs", "--json", cwd=tmp_path).stdout)}
    assert runs == {"dead-run": "cancelled", "live-run": "running"}


@pytest.mark.parametrize(
    "args",
    [["worker", "-c", "0", "--once"], ["worker", "-c", "-2"], ["runs", "-n", "-1"],
     ["search", "x", "-k", "0"], ["demo", "--wait", "-1"], ["search", "  "]],
)  # fmt: skip
def test_out_of_range_numbers_and_empty_queries_are_usage_errors(tmp_path, args):
    # before: worker -c 0 --once waited for ever, -c -2 printed a traceback, and
    # runs -n -1 listed every run (SQLite reads LIMIT -1 as none)
    done = ph(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "is not in the range" in done.stderr or "the query is empty" in done.stderr


def test_a_port_in_use_is_an_error_not_a_traceback(tmp_path):
    import socket

    site = tmp_path / ".pilothouse" / "portal" / "site"
    site.mkdir(parents=True)
    (site / "index.html").write_text("<html></html>")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for args in (["portal", "serve", "--port", port], ["tui", "--serve", "--port", port]):
            done = ph(*args, cwd=tmp_path)
            assert done.returncode == 3, done.stderr
            assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
            assert "Traceback" not in done.stderr


def test_prune_deletes_ended_runs_and_keeps_unfinished_ones(tmp_path):
    import datetime

    from pilothouse.events import RunStarted, log_entry
    from pilothouse.store.sqlite import SQLiteRunStore

    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "one.toml").write_text('[flow]\nsteps = ["a"]\n[personas.a]\n')
    done = [json.loads(ph("run", "one", "-i", f"job {i}", "--json", cwd=tmp_path).stdout)
            for i in range(2)]  # fmt: skip
    store = SQLiteRunStore(tmp_path / ".pilothouse" / "runs.db")
    store.write([log_entry(RunStarted(run_id="going", seq=1, ts=1.0, crew="one", input="x",
                                      flow="sequential"))])  # fmt: skip
    store.close()
    tomorrow = (datetime.date.today() + datetime.timedelta(days=1)).isoformat()
    dry = ph("prune", "--before", tomorrow, "--dry-run", cwd=tmp_path)
    assert dry.stdout.startswith("would delete 2 run(s) and ")
    assert len(json.loads(ph("runs", "--json", cwd=tmp_path).stdout)) == 3  # nothing went
    pruned = ph("prune", "--before", tomorrow, cwd=tmp_path)
    assert pruned.returncode == 0 and pruned.stdout.startswith("deleted 2 run(s) and ")
    left = json.loads(ph("runs", "--json", cwd=tmp_path).stdout)
    assert [r["id"] for r in left] == ["going"]  # an unfinished run is never pruned
    gone = ph("show", done[0]["run_id"], cwd=tmp_path)
    assert gone.returncode == 3 and "no run" in gone.stderr
    blank = ph("show", " ", cwd=tmp_path)  # not "ambiguous": it names no run at all
    assert blank.returncode == 3 and "give a run id" in blank.stderr
    assert "deleted 0 run(s)" in ph("prune", "--before", "1d", cwd=tmp_path).stdout


def test_prune_vacuum_gives_the_space_back(tmp_path):
    import re
    import time

    from pilothouse.events import RunFinished, RunStarted, log_entry
    from pilothouse.store.sqlite import SQLiteRunStore

    store = SQLiteRunStore(tmp_path / ".pilothouse" / "runs.db")
    long_ago = time.time() - 10 * 86400
    for i in range(100):
        started = RunStarted(run_id=f"old{i}", seq=1, ts=long_ago, crew="c", input="x" * 50_000,
                             flow="sequential")  # fmt: skip
        finished = RunFinished(
            run_id=f"old{i}",
            seq=2,
            ts=long_ago,
            output="y" * 50_000,
            steps=1,
            input_tokens=1,
            output_tokens=1,
            cost_usd=0.0,
        )
        store.write([log_entry(started), log_entry(finished)])
    store.close()
    done = ph("prune", "--before", "1d", "--vacuum", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("deleted 100 run(s) and 200 event(s)")
    sizes = re.search(r"the store went from ([\d.]+) MB to ([\d.]+) MB", done.stdout)
    assert sizes, done.stdout
    before, after = map(float, sizes.groups())
    assert before > 10 and after < 1, done.stdout  # ~20 MB of text gone from the disk
    on_disk = sum(p.stat().st_size for p in (tmp_path / ".pilothouse").glob("runs.db*")
                  if not p.name.endswith("-shm"))  # fmt: skip
    assert on_disk < 1_000_000
    assert json.loads(ph("runs", "--json", cwd=tmp_path).stdout) == []


def test_the_served_monitor_stays_on_this_machine_unless_told(tmp_path):
    # it has no login and can approve, reject and cancel: no address others reach
    # without --allow-remote (refused before anything is bound)
    for host in ("0.0.0.0", "192.168.1.20", "monitor.example"):
        done = ph("tui", "--serve", "--host", host, cwd=tmp_path)
        assert done.returncode == 2 and "--allow-remote" in done.stderr, done.stderr


def test_a_store_that_cannot_be_opened_has_its_own_exit_code(tmp_path):
    (tmp_path / ".pilothouse").mkdir()
    (tmp_path / ".pilothouse" / "runs.db").write_bytes(b"not a database" * 1000)
    for command in (("runs",), ("run", "marketing", "-i", "go")):
        done = ph(*command, cwd=tmp_path)
        assert done.returncode == 6, (command, done.stderr)
        assert "cannot open the run store .pilothouse/runs.db: file is not a database" in (
            done.stderr
        )


def test_show_names_the_passage_each_retrieval_verdict_is_for(demo_dir):
    """Five 'guardrail prompt_injection (retrieval): pass' lines said nothing on their
    own: each names its passage now, and the escalation's reason is said once."""
    folder, _ = demo_dir
    run_id = json.loads(ph("runs", "--json", cwd=folder).stdout)[0]["id"]
    shown = ph("show", run_id, cwd=folder).stdout
    verdicts = [line.strip() for line in shown.splitlines()
                if line.strip().startswith("guardrail prompt_injection (retrieval")]  # fmt: skip
    assert verdicts and all(", passage " in line for line in verdicts), verdicts
    per_step = shown.split("\nstep ")
    for step in per_step:
        lines = [line.strip() for line in step.splitlines() if "(retrieval, passage" in line]
        assert len(lines) == len(set(lines)), lines  # no two alike within a step
    assert "risky_claims: risky claims" not in shown and "reason: absolute claims" in shown
