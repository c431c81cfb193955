"""The event log: content, order, durability, observers and isolation between runs."""

from __future__ import annotations

import itertools
import sqlite3

import anyio

import pilothouse
from conftest import crew, text_reply, tool_reply
from pilothouse import hookimpl, tool
from pilothouse.sqlite_store import SQLiteRunStore


@tool(blocking=False)
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


class TestContentAndOrder:
    async def test_one_run_logs_every_event_in_order(self, make_runtime, scripted):
        scripted.tools.append(lookup)
        scripted.provider.enqueue(tool_reply("lookup", {"key": "k"}), text_reply("done"))
        c = crew({"type": "sequential", "steps": ["a"]}, {"a": {"tools": ["lookup"]}})
        async with make_runtime() as rt:
            result = await rt.run(c, "find k")
        # read back through a second connection, as another process would
        store = SQLiteRunStore(pilothouse.load_settings().store_path)
        events = store.events(result.run_id)
        assert [e.type for e in events] == [
            "run_started",
            "step_started",
            "context_built",
            "model_call",
            "tool_call",
            "model_call",
            "step_finished",
            "run_finished",
        ]
        assert [e.seq for e in events] == list(range(1, 9))
        assert all(a.ts <= b.ts for a, b in itertools.pairwise(events))
        started, first_call, call, second_call = events[0], events[3], events[4], events[5]
        assert (started.crew, started.input, started.flow) == ("test", "find k", "sequential")
        assert first_call.messages[-1].content == "find k"
        assert [t.name for t in first_call.tools] == ["lookup"]
        assert first_call.tool_calls[0].name == "lookup" and first_call.usage.input_tokens == 10
        assert (call.tool, call.result) == ("lookup", "value of k")
        assert second_call.messages[-1].role == "tool" and second_call.text == "done"
        assert events[-1].output == "done" and events[-1].input_tokens == 20
        summary = store.get_run(result.run_id[:6])
        assert (summary.status, summary.steps, summary.input_tokens, summary.output) == (
            "succeeded",
            1,
            20,
            "done",
        )
        store.close()

    async def test_every_step_is_committed_before_the_next_starts(self, make_runtime, scripted):
        path = pilothouse.load_settings().store_path
        seen_by_reader = []

        def peek(request):
            # a separate connection sees what the log has committed so far
            db = sqlite3.connect(path)
            seen_by_reader.append(
                db.execute("SELECT COUNT(*) FROM events WHERE type = 'step_finished'").fetchone()[0]
            )
            db.close()
            return text_reply("ok " + str(len(seen_by_reader)))

        scripted.provider.enqueue(peek, peek, peek)
        c = crew({"type": "sequential", "steps": ["a", "b", "c"]}, {n: {} for n in "abc"})
        async with make_runtime() as rt:
            await rt.run(c, "go")
        assert seen_by_reader == [0, 1, 2]


class TestSynchronousFull:
    async def test_full_durability_commits_in_a_worker_thread(
        self, make_runtime, scripted, monkeypatch
    ):
        import threading

        writers = set()
        original = SQLiteRunStore.write

        def spy(self, events):
            writers.add(threading.current_thread().name)
            original(self, events)

        monkeypatch.setattr(SQLiteRunStore, "write", spy)
        scripted.provider.enqueue(text_reply("a"), text_reply("b"))
        c = crew({"type": "sequential", "steps": ["a", "b"]}, {"a": {}, "b": {}})
        async with make_runtime(synchronous="full") as rt:
            result = await rt.run(c, "t")
            assert rt.store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert len(rt.store.events(result.run_id)) == 10
        assert result.ok
        assert writers and threading.main_thread().name not in writers


class TestIsolation:
    async def test_many_runs_at_once_and_a_failing_one_disturbs_none(self, make_runtime, scripted):
        from pilothouse import Model

        class Picky(Model):
            provider, name = "scripted", "picky"

            async def complete(self, request):
                await anyio.sleep(0.001)
                if "poison" in request.messages[-1].content:
                    raise RuntimeError("cannot digest")
                return text_reply("fine")

        scripted.provider.model = lambda name: Picky()
        c = crew({"type": "sequential", "steps": ["a", "b"]}, {"a": {}, "b": {}})
        results = {}
        async with make_runtime() as rt:

            async def one(i):
                results[i] = await rt.run(c, f"poison {i}" if i == 7 else f"task {i}")

            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(one, i)
            runs = rt.store.list_runs(limit=100)
        assert len(runs) == 50
        assert results[7].status == "failed" and results[7].error_kind == "plugin"
        assert "plugin 'scripted'" in results[7].error and "cannot digest" in results[7].error
        assert all(r.ok for i, r in results.items() if i != 7)
        assert sorted(r.status for r in runs).count("succeeded") == 49


class Recorder:
    __name__ = "recorder"

    def __init__(self):
        self.seen = []

    @hookimpl
    def on_event(self, event):
        self.seen.append(event.type)
        if event.type == "step_started":
            raise RuntimeError("observer bug")


class TestObservers:
    async def test_plugin_observers_see_every_event_and_cannot_break_a_run(
        self, workspace, scripted
    ):
        recorder = Recorder()
        scripted.provider.enqueue(text_reply("x"))
        settings = pilothouse.load_settings(default_model="scripted")
        async with pilothouse.Runtime(settings, plugins=[scripted, recorder]) as rt:
            result = await rt.run(crew({"type": "sequential", "steps": ["a"]}, {"a": {}}), "t")
        assert result.ok
        assert recorder.seen == [
            "run_started",
            "step_started",
            "context_built",
            "model_call",
            "step_finished",
            "run_finished",
        ]

    async def test_without_a_store_events_still_reach_observers(self, workspace, scripted):
        seen = []
        settings = pilothouse.load_settings(default_model="scripted")
        async with pilothouse.Runtime(settings, plugins=[scripted], log_events=False) as rt:
            rt.subscribe(lambda e: seen.append(e.type))
            result = await rt.run(crew({"type": "sequential", "steps": ["a"]}, {"a": {}}), "t")
        assert result.ok and seen[0] == "run_started" and seen[-1] == "run_finished"
        assert not (workspace / ".pilothouse").exists()


class TestStoreFailure:
    async def test_a_failed_write_keeps_the_events_for_the_next_flush(self, tmp_path):
        from pilothouse.errors import StoreError
        from pilothouse.eventlog import EventLog
        from pilothouse.events import RunStarted

        class Flaky(SQLiteRunStore):
            fail = True

            def write(self, events):
                if self.fail:
                    self.fail = False
                    raise StoreError("disk full")
                super().write(events)

        store = Flaky(tmp_path / "runs.db")
        log = EventLog(store)
        log.emit(RunStarted(run_id="r1", seq=1, ts=1.0, crew="c", input="i", flow="sequential"))
        try:
            await log.flush()
        except StoreError as exc:
            assert "disk full" in str(exc)
        else:
            raise AssertionError("the failed write was not reported")
        await log.flush()
        assert [e.type for e in store.events("r1")] == ["run_started"]


class TestFollowingTheLog:
    async def test_events_since_gives_every_run_in_global_order(self, make_runtime, scripted):
        scripted.provider.enqueue(*[text_reply(f"out {i}") for i in range(4)])
        c = crew({"type": "sequential", "steps": ["a", "b"]}, {"a": {}, "b": {}})
        async with make_runtime() as rt:
            first = await rt.run(c, "one")
            second = await rt.run(c, "two")
            page = rt.store.events_since(0, limit=5)
            rest = rt.store.events_since(page[-1].id)
        ids = [s.id for s in page + rest]
        assert ids == sorted(ids) and len(ids) == len(set(ids)) == 2 * 10
        assert [s.event.run_id for s in page] == [first.run_id] * 5
        assert {s.event.run_id for s in rest} == {first.run_id, second.run_id}
        assert rest[-1].event.type == "run_finished" and rest[-1].event.run_id == second.run_id


def _open_store(path: str) -> str:
    from pilothouse.sqlite_store import SQLiteRunStore

    try:
        SQLiteRunStore(path).close()
    except Exception as exc:  # reported to the parent, which asserts none
        return repr(exc)
    return "ok"


def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path):
    """A runner and a monitor started together both migrate the new file: one does it,
    the other waits and finds it done (this raced before: 'table already exists')."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        for round_ in range(8):
            path = str(tmp_path / f"runs-{round_}.db")
            results = pool.map(_open_store, [path] * 4, chunksize=1)
            assert results == ["ok"] * 4, results


def test_streamed_text_goes_when_its_call_is_logged_or_the_run_is_taken_over(tmp_path):
    from pilothouse.events import ModelCalled, RunStarted

    store = SQLiteRunStore(tmp_path / "runs.db")
    try:
        started = RunStarted(run_id="r1", seq=1, ts=1.0, crew="c", input="x", flow="sequential")
        store.write([(started, started.model_dump_json())])
        store.put_live([("r1", "1", "Hel"), ("r1", "2", "Wor")])
        assert store.live("r1") == {"1": "Hel", "2": "Wor"}
        call = ModelCalled(run_id="r1", seq=2, ts=2.0, step_id="1", model="m:x", messages=[])
        store.write([(call, call.model_dump_json())])
        assert store.live("r1") == {"2": "Wor"}  # the call of step 1 is in the log now
    finally:
        store.close()
    # the process died while step 2 was streaming; whoever resumes the run drops it
    other = SQLiteRunStore(tmp_path / "runs.db", owner="worker-2")
    try:
        assert other.live("r1") == {"2": "Wor"}
        other.take_over("r1")
        assert other.live("r1") == {}
    finally:
        other.close()


def test_a_store_from_before_run_numbers_keeps_every_event(tmp_path):
    """m009 rebuilds the events table indexed by run number: nothing is lost, the order
    holds, and runs logged afterwards are numbered after the old ones."""
    from pilothouse import sqlite_store
    from pilothouse.events import RunStarted, StepStarted

    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied REAL)")
    for migration in sqlite_store.MIGRATIONS[:8]:  # the store as m008 left it
        migration(db)
        db.execute("INSERT INTO _migrations VALUES (?, 0)", (migration.__name__,))
    for run in ("b-run", "a-run"):
        db.execute("INSERT INTO runs (id, crew, status, input, created, updated)"
                   " VALUES (?, 'c', 'succeeded', 'x', 1, 1)", (run,))  # fmt: skip
        for seq in (1, 2, 3):
            db.execute("INSERT INTO events (run_id, seq, type, step_id, ts, data)"
                       " VALUES (?, ?, 'step_started', ?, 1, ?)",
                       (run, seq, str(seq), StepStarted(run_id=run, seq=seq, step_id=str(seq),
                        persona="p", input="x", model="m:x").model_dump_json()))  # fmt: skip
    db.close()
    store = SQLiteRunStore(path)
    try:
        assert [e.seq for e in store.events("a-run")] == [1, 2, 3]
        assert [e.run_id for e in store.events("b-run")] == ["b-run"] * 3
        assert [s.event.run_id for s in store.events_since(0)][:3] == ["b-run"] * 3
        new = RunStarted(run_id="c-run", seq=1, ts=2.0, crew="c", input="y", flow="sequential")
        store.write([(new, new.model_dump_json())])
        assert [e.type for e in store.events("c-run")] == ["run_started"]
        numbers = dict(store._db.execute("SELECT id, no FROM runs"))
        assert numbers == {"b-run": 1, "a-run": 2, "c-run": 3}
    finally:
        store.close()
