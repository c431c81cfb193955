"""The monitor, driven by Textual's Pilot against stores written by real runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import anyio
import pytest
from textual.widgets import DataTable, Static, TextArea
from watching import monitor as _monitor
from watching import rendered, table_text, until

import pilothouse
from conftest import FlagWord, crew, serve_and_get, stop, text_reply
from pilothouse import Guardrail, PluginError
from pilothouse.redact import Redactor
from pilothouse.tui import Feed
from pilothouse.tui.screens import DecisionScreen, RunScreen

pytest.importorskip("textual", reason="the monitor is the [tui] extra")


def _flagging_crew():
    return crew(
        {"type": "sequential", "steps": ["writer"]},
        {"writer": {"instructions": "Write.", "guardrails": {"output": ["flag_word"]}}},
    )


@pytest.mark.slow
async def test_a_run_from_another_process_streams_in_and_is_approved_from_the_monitor(tmp_path):
    """The issue's end-to-end case: a real runner subprocess, the real app, a decision."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    env["PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS"] = "700"  # slow enough to watch steps arrive
    runner = subprocess.Popen(
        [sys.executable, "-m", "pilothouse", "demo", "--wait", "90", "--json"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        app = _monitor(tmp_path / ".pilothouse" / "runs.db", decider="ana")
        async with app.run_test(size=(120, 40)) as pilot:
            runs = app.query_one("#runs", DataTable)
            await until(pilot, lambda: runs.row_count == 1, what="the run in the fleet")
            assert "marketing" in table_text(runs)
            await pilot.press("enter")
            assert isinstance(app.screen, RunScreen)
            timeline = app.screen.query_one("#timeline", DataTable)
            await until(pilot, lambda: timeline.row_count > 0, what="the history")
            seen = timeline.row_count
            # steps keep arriving while the run goes on: the timeline grows live
            await until(pilot, lambda: timeline.row_count > seen, what="live events")
            # and a reply shows word by word while the model is still writing it
            live = app.screen.query_one("#live", Static)
            await until(pilot, lambda: live.display and "streaming" in rendered(live),
                        what="streamed text")  # fmt: skip
            await until(pilot, lambda: bool(app.feed.waiting), timeout=60, what="an escalation")
            kinds = [e.type for e in app.screen.events]
            assert kinds[0] == "run_started" and "model_call" in kinds
            assert "escalation_raised" in kinds or len(app.feed.waiting) == 1
            await pilot.press("3")
            assert not isinstance(app.screen, RunScreen)
            inbox = app.query_one("#escalations", DataTable)
            await until(pilot, lambda: inbox.row_count == 1, what="the inbox row")
            body = rendered(app.query_one("#escalation-body", Static))
            assert "guaranteed" in body and "compliance" in body
            await pilot.press("a", "y")  # approve, and yes
            await until(pilot, lambda: not app.feed.waiting, what="the decision")
            await until(pilot, lambda: app.feed.runs and next(iter(app.feed.runs.values())).status
                        == "succeeded", timeout=60, what="the run to finish")  # fmt: skip
            assert "succeeded" in table_text(runs)
        out, err = runner.communicate(timeout=60)
    finally:
        stop(runner)
    assert runner.returncode == 0, err
    assert json.loads(out)["status"] == "succeeded"
    store = pilothouse.load_settings(workspace=tmp_path / ".pilothouse").store_path
    decided = [e for e in _events(store) if e["type"] == "escalation_decided"]
    assert decided[0]["by"] == "ana" and decided[0]["decision"] == "approve"


def _events(path) -> list[dict]:
    import sqlite3

    db = sqlite3.connect(path)
    try:
        return [json.loads(row[0]) for row in db.execute("SELECT data FROM events ORDER BY id")]
    finally:
        db.close()


async def _run_until_waiting(rt, tg, results, store_path, input="write"):
    async def go():
        results.append(await rt.run(_flagging_crew(), input))

    tg.start_soon(go)
    with anyio.fail_after(10):
        while not Feed(store_path).poll().runs or not _waiting(store_path):
            await anyio.sleep(0.02)


def _waiting(path) -> bool:
    feed = Feed(path)
    try:
        feed.poll()
        return bool(feed.waiting)
    finally:
        feed.close()


async def test_edit_in_the_dialog_and_reject_needs_a_note(make_runtime, scripted, workspace):
    scripted.guardrails.append(FlagWord())
    scripted.provider.enqueue(text_reply("a risky plan"), text_reply("another risky plan"))
    path = pilothouse.load_settings().store_path
    results: list = []
    async with make_runtime() as rt, anyio.create_task_group() as tg:
        await _run_until_waiting(rt, tg, results, path)
        app = _monitor(path, decider="eve")
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("3")
            await until(pilot, lambda: app.query_one("#escalations", DataTable).row_count == 1)
            await pilot.press("e")
            assert isinstance(app.screen, DecisionScreen)
            area = app.screen.query_one("#decision-text", TextArea)
            assert area.text == "a careful plan"  # the guardrail's proposal, ready to edit
            area.text = "a plan a person wrote"
            await pilot.press("tab")
            await pilot.press(*"house style")
            await pilot.press("ctrl+s")
            await until(pilot, lambda: not isinstance(app.screen, DecisionScreen))
            with anyio.fail_after(10):
                while not results:
                    await anyio.sleep(0.02)
        assert results[0].ok and results[0].output == "a plan a person wrote"

        await _run_until_waiting(rt, tg, results, path, input="again")
        app = _monitor(path, decider="eve")
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("3")
            await until(pilot, lambda: app.query_one("#escalations", DataTable).row_count == 1)
            await pilot.press("r")
            await pilot.press("enter")  # no note yet: refused, the dialog stays
            assert isinstance(app.screen, DecisionScreen)
            await pilot.press(*"off brand", "enter")
            await until(pilot, lambda: not isinstance(app.screen, DecisionScreen))
            with anyio.fail_after(10):
                while len(results) < 2:
                    await anyio.sleep(0.02)
    assert not results[1].ok
    decided = [e for e in _events(path) if e["type"] == "escalation_decided"]
    assert [(d["decision"], d["by"], d["note"]) for d in decided] == [
        ("edit", "eve", "house style"),
        ("reject", "eve", "off brand"),
    ]


class Exploding(Guardrail):
    """A guardrail plugin with a bug."""

    name = "exploding"

    def check(self, text, context):
        raise ZeroDivisionError("the guardrail divided by zero")


async def test_exceptions_show_the_type_plugin_step_and_traceback(make_runtime, scripted,
                                                                  workspace):  # fmt: skip
    scripted.guardrails.append(Exploding())
    scripted.provider.enqueue(text_reply("fine"))
    broken = crew(
        {"type": "sequential", "steps": ["writer"]},
        {"writer": {"instructions": "Write.", "guardrails": {"output": ["exploding"]}}},
    )
    looping = crew(
        {"type": "sequential", "steps": ["writer", "editor"]},
        {"writer": {"instructions": "Write."}, "editor": {"instructions": "Edit."}},
        limits={"max_steps": 1},
    )
    async with make_runtime() as rt:
        failed = await rt.run(broken, "go")
        limited = await rt.run(looping, "go")
    assert not failed.ok and not limited.ok
    app = _monitor(pilothouse.load_settings().store_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        failures = app.query_one("#failures", DataTable)
        await until(pilot, lambda: failures.row_count == 2)
        assert "limit hit" in table_text(failures)
        failures.move_cursor(row=[str(k.value) for k in failures.rows].index(failed.run_id))
        body = app.query_one("#failure-body", Static)
        await until(pilot, lambda: "traceback" in rendered(body), what="the failure detail")
        text = rendered(body)
        assert "ZeroDivisionError" in text and "divided by zero" in text
        assert "exploding" in text and "step 1" in text
        failures.move_cursor(row=[str(k.value) for k in failures.rows].index(limited.run_id))
        await until(pilot, lambda: "limit hit" in rendered(body) and "max_steps" in rendered(body))
    assert PluginError  # the error class the engine wraps plugin failures in


async def _one_logged_run(make_runtime) -> str:
    """One run of a one-persona crew in the workspace's store; its id."""
    async with make_runtime() as rt:
        result = await rt.run(crew({"type": "sequential", "steps": ["w"]},
                                   {"w": {"instructions": "Write."}}), "go")  # fmt: skip
    return result.run_id


async def _open_run(app, pilot, run_id: str) -> RunScreen:
    """Open the run from the fleet table once it is listed; its screen, events loaded."""
    await until(pilot, lambda: app.query_one("#runs", DataTable).row_count == 1)
    app.open_run(run_id)
    await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.events)
    return app.screen


async def test_model_text_is_shown_as_text_and_secrets_are_cut(make_runtime, scripted, workspace):
    key = "sk-live-0123456789abcdefghij"
    hostile = f"[link=https://evil.example]click[/link] [bold red]ALERT[/] key={key}"
    scripted.provider.enqueue(text_reply(hostile))
    run_id = await _one_logged_run(make_runtime)
    app = _monitor(pilothouse.load_settings().store_path, redact=Redactor())
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_run(app, pilot, run_id)
        head = rendered(screen.query_one("#run-head", Static))
        # markup arrives as the characters the model wrote, the key does not arrive
        assert "[link=https://evil.example]click[/link]" in head and "[bold red]ALERT[/]" in head
        assert key not in head and "[redacted]" in head
        timeline = screen.query_one("#timeline", DataTable)
        timeline.move_cursor(row=[e.type for e in screen.events].index("model_call"))
        await pilot.pause(0.1)
        body = rendered(screen.query_one("#event-body", Static))
        assert "[bold red]ALERT[/]" in body and key not in body
        assert app.export_screenshot().count("evil.example") >= 1  # drawn as text
        assert key not in app.export_screenshot()


async def test_the_timeline_follows_new_events_but_not_over_the_persons_cursor(
    make_runtime, scripted, workspace
):
    run_id = await _one_logged_run(make_runtime)
    app = _monitor(pilothouse.load_settings().store_path, redact=Redactor())
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _open_run(app, pilot, run_id)
        timeline = screen.query_one("#timeline", DataTable)
        last = len(screen.events) - 1
        await until(pilot, lambda: timeline.cursor_row == last, what="the newest event")
        # the person moves up and a poll that brings nothing new comes in before the
        # move's highlight is handled: the cursor stays where the person put it
        timeline.move_cursor(row=last - 1)
        screen.take(list(screen.events))
        await pilot.pause(0.2)
        assert timeline.cursor_row == last - 1  # it was pulled back down before


async def test_no_workspace_then_runs_appear(tmp_path):
    path = tmp_path / "ws" / "runs.db"
    app = _monitor(path)
    async with app.run_test(size=(80, 24)) as pilot:
        stats = app.query_one("#stats", Static)
        await until(pilot, lambda: "does not exist" in rendered(stats))
        (tmp_path / "ws").mkdir()
        await until(pilot, lambda: "no run has been made" in rendered(stats))
        async with pilothouse.Runtime(pilothouse.load_settings(workspace=tmp_path / "ws")) as rt:
            await rt.run("support", "my card was charged twice")
        await until(pilot, lambda: app.query_one("#runs", DataTable).row_count == 1)
        assert "support" in table_text(app.query_one("#runs", DataTable))
        assert "1 runs" in rendered(stats)


async def test_filter_window_theme_and_palette(make_runtime, scripted, workspace):
    async with make_runtime() as rt:
        await rt.run("support", "my card was charged twice")
        await rt.run("support", "where is my parcel")
        await rt.run(crew({"type": "sequential", "steps": ["w"]},
                          {"w": {"instructions": "Write."}}, name="other"), "go")  # fmt: skip
    app = _monitor(pilothouse.load_settings().store_path)
    async with app.run_test(size=(100, 30)) as pilot:
        runs = app.query_one("#runs", DataTable)
        await until(pilot, lambda: runs.row_count == 3)
        await pilot.press("slash", *"parcel")
        await until(pilot, lambda: runs.row_count == 1)
        await pilot.press("ctrl+a", "ctrl+k", *"crew:other", "enter")
        await until(pilot, lambda: runs.row_count == 1 and "other" in table_text(runs))
        assert app.focused is runs
        await pilot.press("w")
        assert app.window == "24h" and "last 24h" in rendered(app.query_one("#stats", Static))
        theme = app.theme
        await pilot.press("t")
        assert app.theme != theme
        # the mouse works too: a click on a tab switches to it, a click on a row opens it
        await pilot.click("#--content-tab-exceptions")
        assert app.query_one("#tabs").active == "exceptions"
        await pilot.click("#--content-tab-fleet")
        await pilot.click("#runs", offset=(4, 1))  # the highlighted row: opens it
        await until(pilot, lambda: isinstance(app.screen, RunScreen), what="the run view")
        assert app.screen.run_summary.crew == "other"
        await pilot.press("escape")
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for action in ("Fleet", "Exceptions", "Inbox", "Approve", "Reject", "Cancel run"):
            assert action in titles


def test_the_cli_says_what_the_monitor_needs(tmp_path):
    """``pilothouse tui --help`` lists the serve mode, bound to loopback by default."""
    done = subprocess.run([sys.executable, "-m", "pilothouse", "tui", "--help"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "--serve" in done.stdout and "127.0.0.1" in done.stdout


@pytest.mark.slow
def test_serve_puts_the_monitor_in_a_browser_on_loopback(tmp_path):
    """``pilothouse tui --serve`` (textual-serve) answers on 127.0.0.1 with the app's page."""
    page, err = serve_and_get(["tui", "--serve"], tmp_path)
    assert "pilothouse" in page and "textual" in page.lower()
    assert "monitor on http://127.0.0.1:" in err


def test_the_run_header_says_which_step_is_at_work_and_how_many_are_done():
    """'step 4 compliance ... 3 steps' read as a contradiction: the step at work and the
    steps done are now said as such."""
    from pilothouse.store.base import RunSummary
    from pilothouse.tui.render import progress

    waiting = RunSummary(id="r", crew="marketing", status="waiting_for_human", input="x",
                         created=0, updated=0, steps=3, current_step="4",
                         current_persona="compliance")  # fmt: skip
    assert progress(waiting) == "at step 4 (compliance), 3 steps done"
    ended = waiting.model_copy(update={"status": "succeeded", "steps": 4, "current_persona": None})
    assert progress(ended) == "4 steps"
    assert progress(waiting.model_copy(update={"steps": 1, "current_persona": None})) == (
        "1 step done"
    )


def test_a_runs_labels_show_in_its_timeline_as_text():
    """Where a run came from (an A2A task, say) is on its first line, never markup."""
    from pilothouse.events import RunStarted
    from pilothouse.tui.render import summary

    labels = {"a2a.task": "t-17", "who": "[b]x[/b]"}
    started = RunStarted(run_id="r1", seq=1, ts=0.0, crew="loans", input="check 17",
                         flow="sequential", labels=labels)  # fmt: skip
    line = summary(started, Redactor())
    assert line.plain == "loans (sequential): check 17 [a2a.task=t-17, who=[b]x[/b]]"
    plain = RunStarted(run_id="r2", seq=1, ts=0.0, crew="loans", input="check", flow="sequential")
    assert summary(plain, Redactor()).plain == "loans (sequential): check"
