"""The run store's contract, held against every backend: the same tests on SQLite (a
file) and on PostgreSQL (a real server from the pgserver wheel)."""

from __future__ import annotations

import threading
import time

import pytest

from pilothouse.errors import DecisionError, NotFound, RunBusy
from pilothouse.events import (
    EscalationRaised,
    MemoryWritten,
    ModelCalled,
    RunFailed,
    RunFinished,
    RunQueued,
    RunStarted,
    StepFinished,
    StepStarted,
    entry_of,
    log_entry,
)
from pilothouse.model import Message, Usage
from pilothouse.store.base import AuditRecord
from pilothouse.store.open import open_location


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request, tmp_path):
    """Opens handles on one empty store of the backend (each as its own owner)."""
    location = (
        str(tmp_path / "runs.db")
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    if request.param == "sqlite":
        from pathlib import Path

        location = Path(location)
    opened = []

    def make(owner: str | None = "host:1:a"):
        store = open_location(location, owner=owner)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def _start(store, run_id, *, ts=None, subject=None):
    ts = ts or time.time()
    event = RunStarted(run_id=run_id, seq=1, ts=ts, crew="c", input="go", flow="sequential",
                       subject=subject)  # fmt: skip
    store.write([log_entry(event)])


def _step(store, run_id, seq, step_id="1", output="out"):
    now = time.time()
    store.write([
        entry_of(StepStarted, run_id, seq, now,
                 {"step_id": step_id, "persona": "p", "input": "go", "model": "m"}),
        entry_of(ModelCalled, run_id, seq + 1, now,
                 {"step_id": step_id, "model": "m", "messages": [Message(role="user", content="é")],
                  "text": output, "usage": Usage(input_tokens=7, output_tokens=3),
                  "cost_usd": 0.5}),
        entry_of(StepFinished, run_id, seq + 2, now,
                 {"step_id": step_id, "persona": "p", "output": output, "input_tokens": 7,
                  "output_tokens": 3}),
    ])  # fmt: skip
    return seq + 3


def _finish(store, run_id, seq, output="done"):
    event = RunFinished(run_id=run_id, seq=seq, ts=time.time(), output=output, steps=1,
                        input_tokens=7, output_tokens=3, cost_usd=0.5)  # fmt: skip
    store.write([log_entry(event)])


def test_events_come_back_in_order_and_the_summary_adds_them_up(make_store):
    store = make_store()
    _start(store, "run-aaa1")
    seq = _step(store, "run-aaa1", 2, output="halfway")
    running = store.get_run("run-aaa1")  # the row may lag: reads fold the events in
    assert (running.status, running.steps, running.input_tokens, running.cost_usd) == (
        "running", 1, 7, 0.5
    )  # fmt: skip
    _finish(store, "run-aaa1", seq)
    events = store.events("run-aaa1")
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.type for e in events] == [
        "run_started", "step_started", "model_call", "step_finished", "run_finished"
    ]  # fmt: skip
    assert (
        events[2].messages[0].content == "é" and store.events("run-aaa1", after_seq=4)[0].seq == 5
    )
    done = store.get_run("run-a")  # a unique prefix
    assert (done.status, done.output, done.steps, done.output_tokens) == ("succeeded", "done", 1, 3)


def test_runs_list_newest_first_filter_and_prefixes(make_store):
    store = make_store()
    for i, run_id in enumerate(["abc-1", "abc-2", "xyz-1"]):
        _start(store, run_id, ts=1000.0 + i)
    _finish(store, "abc-1", 2)
    assert [r.id for r in store.list_runs()] == ["xyz-1", "abc-2", "abc-1"]
    assert [r.id for r in store.list_runs(status="succeeded")] == ["abc-1"]
    assert [r.id for r in store.list_runs(limit=1)] == ["xyz-1"]
    assert sorted(r.id for r in store.runs_by_id(["abc-2", "xyz-1", "nope"])) == ["abc-2", "xyz-1"]
    with pytest.raises(NotFound, match="ambiguous"):
        store.get_run("abc")
    with pytest.raises(NotFound, match="no run 'q'"):
        store.get_run("q")


def test_every_runs_events_follow_in_one_global_order(make_store):
    store, other = make_store(), make_store("host:2:b")
    _start(store, "r1")
    _start(other, "r2")
    _step(store, "r1", 2)
    _step(other, "r2", 2)
    page = store.events_since(0, limit=5)
    rest = store.events_since(page[-1].id)
    ids = [s.id for s in page + rest]
    assert ids == sorted(ids) and len(ids) == 8
    assert store.last_event_id() == ids[-1]
    assert [s.event.run_id for s in page + rest].count("r2") == 4


def _raise(store, run_id, seq, escalation_id, risk=0.5):
    event = EscalationRaised(run_id=run_id, seq=seq, ts=time.time(), step_id="1", persona="p",
                             escalation_id=escalation_id, kind="guardrail", reason="risky",
                             risk=risk, evidence={"why": ["é"]}, proposed="safer")  # fmt: skip
    store.write([log_entry(event)])


def test_an_escalation_waits_and_one_of_two_racing_deciders_wins(make_store):
    store = make_store()
    _start(store, "run-e")
    _raise(store, "run-e", 2, "esc-1")
    assert store.get_run("run-e").status == "waiting_for_human"
    waiting = store.escalations()
    assert [(e.id, e.evidence, e.crew) for e in waiting] == [("esc-1", {"why": ["é"]}, "c")]
    deciders = [make_store(f"host:{i}:d") for i in range(2)]
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def decide(handle, who):
        barrier.wait()
        try:
            handle.decide("esc-1", "approve", by=who)
            outcomes.append(f"won:{who}")
        except DecisionError as exc:
            outcomes.append(f"lost:{exc}")

    threads = [threading.Thread(target=decide, args=(h, f"d{i}")) for i, h in enumerate(deciders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(o.split(":")[0] for o in outcomes) == ["lost", "won"], outcomes
    assert "already decided" in next(o for o in outcomes if o.startswith("lost"))
    decided = store.get_escalation("esc")
    assert decided.status == "approve" and decided.decided_by in ("d0", "d1")
    assert [e.id for e in store.decided_among(["esc-1", "nope"])] == ["esc-1"]


def test_a_run_that_ends_withdraws_what_still_waits(make_store):
    store = make_store()
    _start(store, "run-w")
    _raise(store, "run-w", 2, "esc-w")
    _finish(store, "run-w", 3)
    assert store.escalations() == []
    withdrawn = store.get_escalation("esc-w")
    assert withdrawn.status == "withdrawn" and "before anyone decided" in withdrawn.note
    with pytest.raises(DecisionError, match="no longer waits"):
        store.decide("esc-w", "approve", by="late")


def test_a_run_that_escalates_and_ends_in_one_write_withdraws_it(make_store):
    """The handle that started a run skips the end-of-run clean-up only while the run
    has raised nothing: an escalation and the end in one batch still withdraw it."""
    store = make_store()
    _start(store, "run-x")
    raised = EscalationRaised(run_id="run-x", seq=2, ts=time.time(), step_id="1", persona="p",
                              escalation_id="esc-x", kind="guardrail", reason="risky", risk=0.5,
                              evidence={}, proposed=None)  # fmt: skip
    failed = RunFailed(run_id="run-x", seq=3, ts=time.time(), kind="error", error_type="E",
                       message="boom")  # fmt: skip
    store.write([log_entry(raised), log_entry(failed)])
    assert store.get_escalation("esc-x").status == "withdrawn"
    assert store.escalations() == []


def test_a_run_ended_by_another_handle_leaves_nothing_waiting_or_streaming(make_store):
    """A run started (and streamed, and escalated) by one process and ended by another
    (a stalled run cancelled from the monitor, say): the other handle knows nothing
    of the run and clears it all."""
    first, other = make_store("host:1:a"), make_store("host:2:b")
    _start(first, "run-y")
    first.put_live([("run-y", "1", "Hel")])
    _raise(first, "run-y", 2, "esc-y")
    _finish(other, "run-y", 3)
    assert first.live("run-y") == {} and other.live("run-y") == {}
    assert other.get_escalation("esc-y").status == "withdrawn"
    # and a run the first handle started, streamed and ended itself
    _start(first, "run-z")
    first.put_live([("run-z", "1", "Wor")])
    _finish(first, "run-z", 2)
    assert other.live("run-z") == {}


def test_memory_is_kept_recalled_and_forgotten(make_store):
    store = make_store()
    _start(store, "run-m", subject="ana")
    facts = [MemoryWritten(run_id="run-m", seq=2 + i, ts=1000.0 + i, step_id="1", memory_id=f"m{i}",
                           subject="ana", channel="email", fact=f"fact {i} é", persona="p")
             for i in range(3)]  # fmt: skip
    store.write([log_entry(f) for f in facts])
    again = facts[0].model_copy(update={"seq": 9})
    store.write([log_entry(again)])  # the same fact logged again (a replayed step): kept once
    assert [m.fact for m in store.memories("ana")] == ["fact 0 é", "fact 1 é", "fact 2 é"]
    assert [m.id for m in store.memories("ana", limit=2)] == ["m1", "m2"]
    assert store.forget(memory_id="m1") == 1
    # a forgotten fact still comes back by id, from the event that kept it
    assert [m.fact for m in store.memories_by_id(["m2", "m1"])] == ["fact 2 é", "fact 1 é"]
    assert store.forget(subject="ana") == 2 and store.memories("ana") == []


def test_audits_are_kept_replaced_and_found_by_prefix(make_store):
    store = make_store()
    record = AuditRecord(id="aud-123", kind="bias", crew="c", created=1000.0, ok=False,
                         summary="gap", report={"gap": 0.3}, run_ids=["r1"])  # fmt: skip
    store.add_audit(record)
    store.add_audit(record.model_copy(update={"summary": "gap 0.3", "ok": True}))
    assert [(a.summary, a.ok) for a in store.audits()] == [("gap 0.3", True)]
    assert store.get_audit("aud").report == {"gap": 0.3}
    assert store.audits(kind="adversarial") == []


def test_live_text_goes_when_its_call_is_logged_or_the_run_ends(make_store):
    store = make_store()
    _start(store, "run-l")
    store.put_live([("run-l", "1", "Hel"), ("run-l", "2", "Wor")])
    store.put_live([("run-l", "1", "Hello")])
    assert store.live("run-l") == {"1": "Hello", "2": "Wor"}
    _step(store, "run-l", 2, step_id="1")
    assert store.live("run-l") == {"2": "Wor"}
    _finish(store, "run-l", 5)
    assert store.live("run-l") == {}


def test_workers_claim_queued_runs_without_sharing_one(make_store):
    store = make_store(None)
    for i in range(20):
        queued = RunQueued(run_id=f"q{i:02d}", seq=1, ts=1000.0 + i, crew="c", input="go")
        store.write([log_entry(queued)])
    workers = [make_store(f"host:{i}:w") for i in range(4)]
    claimed: dict[int, list[str]] = {}
    barrier = threading.Barrier(4)

    def claim(i):
        barrier.wait()
        got = []
        while batch := workers[i].claim_queued(2):
            got += [r.id for r in batch]
        claimed[i] = got

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    every = [run_id for got in claimed.values() for run_id in got]
    assert sorted(every) == [f"q{i:02d}" for i in range(20)]  # each once
    runs = {r.id: r for r in store.list_runs()}
    assert all(runs[run_id].owner == f"host:{i}:w" for i, got in claimed.items() for run_id in got)


def test_a_live_lease_keeps_others_out_and_a_cancel_reaches_a_queued_run(make_store):
    store = make_store("host:1:a")
    _start(store, "run-x")
    store.heartbeat()
    with pytest.raises(RunBusy, match="being executed by host:1:a"):
        make_store("host:2:b").take_over("run-x")
    assert store.orphaned() == ["run-x"]  # its own runs, for a resume in the same process
    assert store.cancel_requested(["run-x"]) == []
    flagged = make_store(None).request_cancel("run-x")
    assert flagged.status == "running" and store.cancel_requested(["run-x"]) == ["run-x"]
    store.write([log_entry(RunQueued(run_id="run-q", seq=1, ts=time.time(), crew="c", input="i"))])
    cancelled = make_store(None).request_cancel("run-q")
    assert cancelled.status == "cancelled"
    assert [e.type for e in store.events("run-q")] == ["run_queued", "run_cancelled"]


def test_prune_deletes_the_runs_that_ended_before_a_time(make_store):
    store = make_store()
    _start(store, "old", ts=1000.0)
    _finish(store, "old", 2)
    _start(store, "working", ts=1000.0)
    assert store.prune(time.time() + 60, dry_run=True) == (1, 2)
    assert store.prune(time.time() + 60) == (1, 2)
    assert [r.id for r in store.list_runs()] == ["working"]
    assert store.events("old") == [] and store.size() > 0


async def test_the_engine_write_path_commits_a_batch(make_store):
    store = make_store()
    await store.commit([log_entry(RunStarted(run_id="run-c", seq=1, ts=1.0, crew="c",
                                             input="go", flow="sequential"))])  # fmt: skip
    assert [e.type for e in make_store(None).events("run-c")] == ["run_started"]
