"""Blocking plugin code runs in daemon threads that a run can give up on."""

from __future__ import annotations

import contextvars
import os
import subprocess
import sys
import threading

import anyio
import pytest

from pilothouse import run_blocking

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


async def test_a_result_an_error_and_the_callers_context_come_back():
    WHO.set("ana")
    assert await run_blocking(lambda: f"{WHO.get()} in {threading.current_thread().name}",
                              name="lookup") == "ana in pilothouse: lookup"  # fmt: skip

    def broken() -> None:
        raise KeyError("no such row")

    with pytest.raises(KeyError, match="no such row"):
        await run_blocking(broken)


async def test_a_cancelled_caller_stops_waiting_and_the_thread_is_a_daemon():
    release = threading.Event()
    seen: list[threading.Thread] = []

    def hang() -> str:
        seen.append(threading.current_thread())
        release.wait(30)
        return "late"

    try:
        with anyio.fail_after(10):  # the test's own bound; the call is abandoned long before
            with anyio.move_on_after(0.2) as scope:
                await run_blocking(hang)
        assert scope.cancelled_caught
        assert seen[0].daemon and seen[0].is_alive()
    finally:
        release.set()


async def test_abandoned_calls_do_not_hold_a_thread_slot(monkeypatch):
    from pilothouse import blocking

    monkeypatch.setattr(blocking, "MAX_THREADS", 2)
    monkeypatch.setattr(blocking, "_limiter", anyio.lowlevel.RunVar("test_threads"))
    release = threading.Event()
    try:
        for _ in range(3):  # more hung calls than slots
            with anyio.move_on_after(0.1):
                await run_blocking(lambda: release.wait(30))
        with anyio.fail_after(10):
            assert await run_blocking(lambda: 42) == 42
    finally:
        release.set()


PLUGIN = '''
import time
from pilothouse import hookimpl, tool

@tool
def stuck_lookup(city: str) -> str:
    """Look up a city in a system that hangs."""
    time.sleep(60)
    return city

@hookimpl
def register_tools(register):
    register(stuck_lookup)
'''

CREW = """
[flow]
steps = ["a"]
[limits]
timeout_s = 0.5
[personas.a]
instructions = "Use stuck_lookup to look up the city."
tools = ["stuck_lookup"]
"""


def test_the_cli_exits_when_its_run_times_out_in_a_hung_tool(tmp_path):
    # Before: the run was reported as timed out at once, then the process stayed
    # alive until the tool's thread returned (here a minute).
    (tmp_path / "stuck_plugin.py").write_text(PLUGIN)
    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "stuck.toml").write_text(CREW)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PILOTHOUSE_")}
    env |= {"PILOTHOUSE_PLUGIN_MODULES": "stuck_plugin", "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "pilothouse", "run", "stuck", "-i", "Oslo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=45,  # < the tool's 60 s
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert "the run took longer than 0.5 s" in done.stderr


class TestCodeThatHoldsTheLoop:
    """Sync plugin code declared quick runs on the event loop; when it is slow, every
    run in the process stands still, and the log says which part and how to fix it."""

    @pytest.fixture(autouse=True)
    def _fresh_reports(self, monkeypatch):
        from pilothouse import blocking
        from pilothouse.repeats import Repeats

        monkeypatch.setattr(blocking, "_reported", Repeats())

    @staticmethod
    def _warnings(caplog) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "pilothouse.blocking"]

    async def test_a_slow_guardrail_check_is_reported_once(self, make_runtime, scripted, caplog):
        import time

        from conftest import crew
        from pilothouse import Guardrail, Verdict

        class Lookup(Guardrail):
            name = "lookup"  # blocking = False: it claims to be quick

            def check(self, text, context):
                time.sleep(0.12)
                return Verdict.ok()

        scripted.guardrails.append(Lookup())
        c = crew({"type": "sequential", "steps": ["a", "b"]},
                 {n: {"guardrails": {"output": ["lookup"]}} for n in "ab"})  # fmt: skip
        async with make_runtime() as rt:
            assert (await rt.run(c, "go")).ok
        warnings = self._warnings(caplog)
        assert len(warnings) == 1, warnings  # two slow checks, one report
        assert "guardrail 'lookup' held the event loop" in warnings[0]
        assert "set blocking = True" in warnings[0]

    async def test_it_is_reported_again_now_and_then_with_a_count(self, caplog, monkeypatch):
        import time

        from pilothouse import blocking, repeats

        for _ in range(3):
            blocking.report_held_loop("tool 'fx'", time.perf_counter() - 0.2, "make it async")
        monkeypatch.setattr(repeats, "REPEAT_S", 0.0)  # a minute later
        blocking.report_held_loop("tool 'fx'", time.perf_counter() - 0.3, "make it async")
        blocking.report_held_loop("tool 'fx'", time.perf_counter(), "make it async")  # quick
        warnings = self._warnings(caplog)
        assert len(warnings) == 2, warnings
        assert warnings[0].startswith("tool 'fx' held the event loop for 0.2")
        assert warnings[1] == (
            "tool 'fx' held the event loop again, 3 time(s) since it was last reported"
            " (0.30 s this time)"
        )

    async def test_a_quick_tool_that_is_not_and_a_slow_observer(
        self, make_runtime, scripted, caplog
    ):
        import time

        from conftest import crew, text_reply, tool_reply
        from pilothouse import tool

        @tool(blocking=False)
        def stock(item: str) -> str:
            """Stock of an item."""
            time.sleep(0.12)
            return "3"

        def audit_trail(event):
            if event.type == "run_finished":
                time.sleep(0.12)

        scripted.tools.append(stock)
        scripted.provider.enqueue(tool_reply("stock", {"item": "x"}), text_reply("3 left"))
        c = crew({"type": "sequential", "steps": ["a"]}, {"a": {"tools": ["stock"]}})
        async with make_runtime() as rt:
            rt.log.subscribe(audit_trail, name="audit-trail")
            assert (await rt.run(c, "how many x?")).ok
        warnings = self._warnings(caplog)
        assert len(warnings) == 2, warnings
        assert "tool 'stock' held the event loop" in warnings[0]
        assert "drop blocking=False" in warnings[0]
        assert "event observer audit-trail held the event loop" in warnings[1]

    async def test_quick_code_is_not_reported(self, make_runtime, scripted, caplog):
        from conftest import crew

        async with make_runtime() as rt:
            assert (await rt.run(crew({"type": "sequential", "steps": ["a"]}, {"a": {}}), "go")).ok
        assert self._warnings(caplog) == []


async def test_the_watchdog_says_where_the_event_loop_is_held(
    make_runtime, scripted, caplog, monkeypatch
):
    """An async tool that blocks (time.sleep, a sync HTTP client) holds every run; the
    watchdog names the place while the loop is still held."""
    import time

    from conftest import crew, text_reply, tool_reply
    from pilothouse import tool
    from pilothouse.engine import watchdog

    monkeypatch.setattr(watchdog, "HELD_S", 0.3)

    @tool
    async def fetch_rates(currency: str) -> str:
        """Exchange rates."""
        time.sleep(0.8)  # the bug: a blocking call in async code
        return "1.08"

    scripted.tools.append(fetch_rates)
    scripted.provider.enqueue(tool_reply("fetch_rates", {"currency": "EUR"}), text_reply("ok"))
    c = crew({"type": "sequential", "steps": ["a"]}, {"a": {"tools": ["fetch_rates"]}})
    async with make_runtime() as rt:
        await anyio.sleep(0.2)  # the watchdog is at work
        assert (await rt.run(c, "EUR rate?")).ok
    reports = [r.getMessage() for r in caplog.records if r.name == "pilothouse.engine.watchdog"]
    assert len(reports) == 1, reports
    assert "the event loop has been held for" in reports[0]
    assert "fetch_rates (" in reports[0] and "test_blocking.py" in reports[0]


@pytest.mark.parametrize("repeat_s", [0.0, 60.0], ids=["due", "within-a-minute"])
async def test_a_place_that_holds_the_loop_again_is_reported_again_with_a_count(
    make_runtime, scripted, caplog, monkeypatch, repeat_s
):
    import time

    from conftest import crew, text_reply, tool_reply
    from pilothouse import repeats, tool
    from pilothouse.engine import watchdog

    monkeypatch.setattr(watchdog, "HELD_S", 0.3)
    monkeypatch.setattr(repeats, "REPEAT_S", repeat_s)

    @tool
    async def fetch_rates(currency: str) -> str:
        """Exchange rates."""
        time.sleep(0.8)
        return "1.08"

    scripted.tools.append(fetch_rates)
    for _ in range(2):
        scripted.provider.enqueue(tool_reply("fetch_rates", {"currency": "EUR"}), text_reply("ok"))
    c = crew({"type": "sequential", "steps": ["a"]}, {"a": {"tools": ["fetch_rates"]}})
    async with make_runtime() as rt:
        await anyio.sleep(0.2)
        for question in ("EUR rate?", "EUR rate now?"):
            assert (await rt.run(c, question)).ok
            await anyio.sleep(0.2)  # the loop beats between the two stalls
    reports = [r.getMessage() for r in caplog.records if r.name == "pilothouse.engine.watchdog"]
    assert "the event loop has been held for" in reports[0]
    if repeat_s:  # the second stall, within a minute of the first report, is counted only
        assert len(reports) == 1, reports
        return
    assert len(reports) == 2, reports
    assert reports[1].startswith("the event loop was held again in ")
    assert "test_blocking.py" in reports[1] and "1 time(s) since it was last reported" in reports[1]


async def test_the_watchdog_is_quiet_when_the_loop_moves(make_runtime, scripted, caplog):
    from conftest import crew

    async with make_runtime() as rt:
        for _ in range(3):
            assert (await rt.run(crew({"type": "sequential", "steps": ["a"]}, {"a": {}}), "go")).ok
        await anyio.sleep(0.3)
    assert not [r for r in caplog.records if r.name == "pilothouse.engine.watchdog"]
