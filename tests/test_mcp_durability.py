"""MCP calls across process lives: a call that answered is never sent again on resume
after kill -9; one in flight is sent again only when the tool says that is safe, else a
person says what happened; a process that ends normally says nothing on stderr. The
runner is a child process; the servers are the SDK-built inventory over streamable
HTTP, which counts what it was asked, and mcp-server-time over stdio."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from command import ph

from conftest import wait_for_inbox

pytestmark = pytest.mark.slow

CREW = """
[flow]
steps = ["clerk"]
[personas.clerk]
instructions = "Do what is asked."
tools = ["mcp:inv/*", "mcp:time/*"]
"""

RUNNER = textwrap.dedent(
    """
    import anyio, json, sys, pilothouse
    from pilothouse.testing import ScriptedPlugin, call, reply

    async def main():
        model = ScriptedPlugin()
        for name, arguments in json.loads(sys.argv[2]):
            model.enqueue(call(name, **arguments))
        model.enqueue(reply("Done."))
        settings = pilothouse.load_settings(default_model="scripted")
        async with pilothouse.Runtime(settings, plugins=[model]) as rt:
            if sys.argv[1] == "run":
                result = await rt.run("clerk", "go", run_id="mcp-crash")
            else:
                result = await rt.resume("mcp-crash")
        print(json.dumps({"ok": result.ok, "error": result.error}))

    anyio.run(main)
    """
)


@pytest.fixture
def served(tmp_path):
    """The inventory server and a workspace whose clerk uses it: (state, folder, env)."""
    from mcp_server import Inventory, serve

    state = Inventory()
    with serve(state) as server:
        (tmp_path / "crews").mkdir()
        (tmp_path / "crews" / "clerk.toml").write_text(CREW)
        (tmp_path / "pilothouse.toml").write_text(
            f'[plugins.mcp.servers.inv]\nurl = "{server.url}"\n'
            "[plugins.mcp.servers.time]\n"
            f"command = {json.dumps(sys.executable)}\n"
            'args = ["-m", "mcp_server_time", "--local-timezone", "UTC"]\n'
        )
        (tmp_path / "runner.py").write_text(RUNNER)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
        yield state, tmp_path, env
        state.release.set()


def _killed_mid_call(state, folder, env, script) -> None:
    """Start the run, wait until the server holds the held call, kill -9 the runner."""
    runner = subprocess.Popen([sys.executable, "runner.py", "run", json.dumps(script)],
                              cwd=folder, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)  # fmt: skip
    try:
        entered = state.entered.wait(timeout=120)
        assert entered, f"the held call never reached the server: {runner.stderr.read()}"
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
        runner.stderr.close()
    state.release.set()  # the server's handler answers into the void


def _resuming(folder, env, script) -> subprocess.Popen:
    """The runner resuming the run, in the background (it may wait for a person)."""
    return subprocess.Popen([sys.executable, "runner.py", "resume", json.dumps(script)],
                            cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _events(folder, kind):
    db = sqlite3.connect(folder / ".pilothouse" / "runs.db")
    try:
        rows = db.execute("SELECT data FROM events WHERE run_id = 'mcp-crash' AND type = ?"
                          " ORDER BY seq", (kind,)).fetchall()  # fmt: skip
    finally:
        db.close()
    return [json.loads(data) for (data,) in rows]


def test_an_answered_call_is_not_repeated_and_a_read_only_one_in_flight_is_resent(served):
    state, folder, env = served
    script = [["inv__reserve", {"item": "helio"}], ["inv__held_lookup", {"item": "helio"}]]
    # the resumed step asks its model again: the same calls come back
    _killed_mid_call(state, folder, env, script)
    assert state.calls == ["reserve helio", "held_lookup helio"]
    (started,) = _events(folder, "tool_started")  # only the call not safe to repeat
    assert started["tool"] == "inv__reserve" and started["source"] == "mcp:inv"
    (answered,) = _events(folder, "tool_call")  # committed before the next call was sent
    assert answered["result"] == "one helio reserved"

    done = subprocess.run([sys.executable, "runner.py", "resume", json.dumps(script)],
                          cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["ok"]
    assert state.calls == ["reserve helio", "held_lookup helio", "held_lookup helio"]
    calls = _events(folder, "tool_call")
    assert [c["tool"] for c in calls] == ["inv__reserve", "inv__held_lookup"]
    assert calls[1]["result"] == "helio: 12 in stock"
    assert not _events(folder, "escalation_raised")


@pytest.mark.parametrize(
    ("decision", "sent", "model_reads"),
    [
        ("reject", 1, "may or may not have run"),
        ("approve", 2, "one helio reserved"),
        ("edit", 1, "it ran: order 77 holds one helio"),
    ],
)
def test_a_call_in_flight_that_is_not_safe_to_repeat_asks_a_person(
    served, decision, sent, model_reads
):
    state, folder, env = served
    script = [["inv__held_reserve", {"item": "helio"}]]
    _killed_mid_call(state, folder, env, script)
    assert state.calls == ["held_reserve helio"]
    assert [e["tool"] for e in _events(folder, "tool_started")] == ["inv__held_reserve"]
    assert not _events(folder, "tool_call")  # it never answered

    resumed = _resuming(folder, env, script)
    try:
        (waiting,) = wait_for_inbox(folder, env)
        assert waiting["kind"] == "tool_outcome_unknown"
        assert state.calls == ["held_reserve helio"]  # not sent again on its own
        shown = ph("show", "mcp-crash", cwd=folder, env=env)
        assert "inv__held_reserve on mcp:inv by clerk that may have run" in shown.stdout
        args = {"edit": ["--text", "it ran: order 77 holds one helio"]}.get(decision, [])
        decided = ph(decision, waiting["id"], "--by", "ana", "--note", "checked the orders",
                     *args, cwd=folder, env=env)  # fmt: skip
        assert decided.returncode == 0, decided.stderr
        out, err = resumed.communicate(timeout=120)
    finally:
        resumed.kill()
    assert resumed.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["ok"]
    assert state.calls.count("held_reserve helio") == sent
    (call,) = _events(folder, "tool_call")
    assert model_reads in (call["result"] or call["error"])


def test_a_process_that_used_mcp_servers_ends_with_nothing_on_stderr(served):
    """Sessions over stdio and HTTP are closed in the tasks that opened them: no
    'cancel scope in a different task', no warning, no traceback at exit."""
    state, folder, env = served
    script = [["inv__lookup", {"item": "helio"}],
              ["time__get_current_time", {"timezone": "Europe/Oslo"}]]  # fmt: skip
    done = subprocess.run([sys.executable, "runner.py", "run", json.dumps(script)],
                          cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0 and json.loads(done.stdout.splitlines()[-1])["ok"]
    assert done.stderr == ""
    looked, timed = _events(folder, "tool_call")
    assert looked["source"] == "mcp:inv" and timed["source"] == "mcp:time"
    assert looked["error"] is None and timed["error"] is None
    assert state.calls == ["lookup helio"]


def test_a_destructive_call_killed_mid_flight_asks_again_and_is_not_repeated(served):
    """Approved, sent, the process killed before it answered: on resume the approval
    stands (it is not asked again) but the outcome is unknown, so a person is asked
    whether it ran; a rejection leaves it sent once."""
    state, folder, env = served
    script = [["inv__held_delete", {"item": "helio"}]]
    runner = subprocess.Popen([sys.executable, "runner.py", "run", json.dumps(script)],
                              cwd=folder, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        (approval,) = wait_for_inbox(folder, env)
        assert approval["kind"] == "tool_approval" and state.calls == []
        assert ph("approve", approval["id"], "--by", "ana", cwd=folder, env=env).returncode == 0
        assert state.entered.wait(timeout=120), "the approved call never reached the server"
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
    state.release.set()
    resumed = _resuming(folder, env, script)
    try:
        (unknown,) = wait_for_inbox(folder, env)
        assert unknown["kind"] == "tool_outcome_unknown" and unknown["id"] != approval["id"]
        assert state.calls == ["held_delete helio"]
        decided = ph("reject", unknown["id"], "--by", "ana", "--note", "it ran: helio is gone",
                     cwd=folder, env=env)  # fmt: skip
        assert decided.returncode == 0, decided.stderr
        out, err = resumed.communicate(timeout=120)
    finally:
        resumed.kill()
    assert resumed.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["ok"]
    assert state.calls == ["held_delete helio"]  # sent once, ever
    raised = [e["kind"] for e in _events(folder, "escalation_raised")]
    assert raised == ["tool_approval", "tool_outcome_unknown"]
