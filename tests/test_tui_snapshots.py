"""Snapshots of the monitor's screens at 80x24 over a store with fixed contents."""

from __future__ import annotations

import os
import time

import pytest

pytest.importorskip("textual", reason="the monitor is the [tui] extra")

from textual.widgets import DataTable

from pilothouse.events import (
    ContextBuilt,
    ContextPiece,
    ErrorRaised,
    EscalationRaised,
    GuardrailChecked,
    ModelCalled,
    RunFailed,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
    log_entry,
)
from pilothouse.model import Message, Usage
from pilothouse.store.lease import HOST
from pilothouse.store.sqlite import SQLiteRunStore
from pilothouse.tui import Feed, MonitorApp

T0 = 1_790_000_000.0  # a fixed moment, so times and ages on screen never change


def _write(store, run_id, events):
    for seq, (offset, event) in enumerate(events, start=1):
        event.run_id, event.seq, event.ts = run_id, seq, T0 + offset
        store.write([log_entry(event)])


@pytest.fixture
def fixed_store(tmp_path, monkeypatch):
    """Four runs: succeeded, failed, waiting for a person, running."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    path = tmp_path / "runs.db"
    # this process executes the unfinished runs (else they would show as stalled)
    store = SQLiteRunStore(path, owner=f"{HOST}:{os.getpid()}:snapshots")
    kw = {"run_id": "", "seq": 0}
    _write(store, "a1b2c3d4e5f6", [
        (0, RunStarted(**kw, crew="marketing", input="Plan the Helio 30 launch", flow="sequential")),
        (1, StepStarted(**kw, step_id="1", persona="researcher", input="Plan", model="offline:default")),
        (2, ContextBuilt(**kw, step_id="1", persona="researcher", tokens=120, pieces=[
            ContextPiece(kind="instructions", source="persona:researcher", tokens=40),
            ContextPiece(kind="passage", source="demo_corpus:helio.md", ref="helio#1", tokens=80),
        ])),
        (3, ModelCalled(**kw, step_id="1", model="offline:default", offline=True,
                        messages=[Message(role="system", content="You research."),
                                  Message(role="user", content="Plan the Helio 30 launch")],
                        text="The Helio 30 weighs 1.4 kg [helio#1].",
                        usage=Usage(input_tokens=120, output_tokens=12), latency_ms=21.0)),
        (4, StepFinished(**kw, step_id="1", persona="researcher", output="The Helio 30 weighs 1.4 kg.")),
        (5, RunFinished(**kw, output="The Helio 30 weighs 1.4 kg.", steps=1, input_tokens=120,
                        output_tokens=12, cost_usd=0.0)),
    ])  # fmt: skip
    _write(store, "b2c3d4e5f6a1", [
        (60, RunStarted(**kw, crew="support", input="my card was charged twice", flow="handoff")),
        (61, StepStarted(**kw, step_id="1", persona="triage", input="card", model="openai:gpt-4o-mini")),
        (62, ErrorRaised(**kw, error_type="ConnectError", message="model openai:gpt-4o-mini: connection refused",
                         plugin="openai", traceback="Traceback (most recent call last):\n  ...\nConnectError: connection refused\n")),
        (63, RunFailed(**kw, kind="model", error_type="ModelError",
                       message="model openai:gpt-4o-mini: connection refused", plugin="openai")),
    ])  # fmt: skip
    _write(store, "c3d4e5f6a1b2", [
        (120, RunStarted(**kw, crew="loans", input="Loan for Ana, 12k, 36 months", flow="sequential")),
        (121, StepStarted(**kw, step_id="1", persona="underwriter", input="Loan", model="offline:default")),
        (122, GuardrailChecked(**kw, step_id="1", guardrail="risky_claims", stage="output", action="flag",
                               reason="says 'guaranteed'", risk=0.8, replacement="designed")),
        (123, EscalationRaised(**kw, step_id="1", escalation_id="esc-0001", persona="underwriter",
                               kind="guardrail", reason="absolute claims: 'guaranteed'", risk=0.8,
                               evidence={"guardrail": "risky_claims", "stage": "output",
                                         "text": "Approval is guaranteed to take a day.",
                                         "spans": [{"start": 12, "end": 22, "label": "absolute claim"}],
                                         "policy": {"reject": "revise", "max_revisions": 2,
                                                    "on_timeout": "reject", "timeout_s": 3600}},
                               proposed="Approval is designed to take a day.")),
    ])  # fmt: skip
    _write(store, "d4e5f6a1b2c3", [
        (300, RunStarted(**kw, crew="marketing", input="Plan the autumn sale", flow="sequential")),
        (301, StepStarted(**kw, step_id="2", persona="writer", input="Plan", model="offline:default")),
    ])  # fmt: skip
    store.close()
    return path


def _app(path):
    app = MonitorApp(Feed(path, clock=lambda: T0 + 360), poll_interval=0.05)
    app.sub_title = ".pilothouse"  # not the temporary folder, which changes every run
    return app


async def _until(pilot, condition, seconds: float = 10.0):
    """Let the app run until ``condition()`` holds (a bounded wait)."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("the app never got there")


async def _loaded(pilot):
    table = pilot.app.query_one("#runs", DataTable)
    while table.row_count < 4:
        await pilot.pause(0.05)
    await pilot.pause(0.2)


def test_fleet(snap_compare, fixed_store):
    assert snap_compare(_app(fixed_store), terminal_size=(80, 24), run_before=_loaded)


def test_run(snap_compare, fixed_store):
    async def open_run(pilot):
        await _loaded(pilot)
        pilot.app.open_run("a1b2c3d4e5f6")
        await _until(pilot, lambda: len(getattr(pilot.app.screen, "events", ())) == 6)
        table = pilot.app.screen.query_one("#timeline", DataTable)
        # the timeline follows the newest event: keys pressed before the cursor got
        # there were undone by it on a loaded machine
        await _until(pilot, lambda: table.cursor_row == 5)
        await pilot.press("up", "up")  # the model call, in full on the right
        await _until(pilot, lambda: table.cursor_row == 3)
        await pilot.pause(0.2)

    assert snap_compare(_app(fixed_store), terminal_size=(80, 24), run_before=open_run)


def test_exceptions(snap_compare, fixed_store):
    async def exceptions(pilot):
        await _loaded(pilot)
        await pilot.press("2")
        await pilot.pause(0.5)

    assert snap_compare(_app(fixed_store), terminal_size=(80, 24), run_before=exceptions)


async def _inbox(pilot):
    await _loaded(pilot)
    await pilot.press("3")
    await pilot.pause(0.2)


def test_inbox(snap_compare, fixed_store):
    assert snap_compare(_app(fixed_store), terminal_size=(80, 24), run_before=_inbox)


def test_inbox_tall(snap_compare, fixed_store):
    """The whole decision pane: the flagged word in reverse video, the word diff, what
    each key does."""
    assert snap_compare(_app(fixed_store), terminal_size=(100, 44), run_before=_inbox)


def test_approve_asks_first(snap_compare, fixed_store):
    """``a`` asks once, saying what approving will do."""

    async def approve(pilot):
        await _inbox(pilot)
        await pilot.press("a")
        await _until(pilot, lambda: type(pilot.app.screen).__name__ == "ConfirmScreen")
        await pilot.pause(0.2)

    assert snap_compare(_app(fixed_store), terminal_size=(80, 24), run_before=approve)
