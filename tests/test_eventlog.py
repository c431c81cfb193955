"""The event log: content, order, durability, observers and isolation between runs."""

from __future__ import annotations

import itertools
import logging
import sqlite3

import anyio
import pytest

import pilothouse
from conftest import crew, text_reply, tool_reply
from pilothouse import hookimpl, tool
from pilothouse.events import log_entry, parse_event
from pilothouse.store.sqlite import SQLiteRunStore


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

    async def test_a_run_alone_commits_once_per_step(self, make_runtime, scripted):
        """Its start shares the first step's commit when nothing waits in between (a
        model that answers at once: the offline model, a replay)."""
        c = crew({"type": "sequential", "steps": ["a", "b", "c"]}, {n: {} for n in "abc"})
        async with make_runtime() as rt:
            write = rt.store.write
            commits = []

            def counted(entries):
                commits.append([e.type for e in entries])
                write(entries)

            rt.store.write = counted
            for i in range(5):
                assert (await rt.run(c, f"task {i}")).ok
        assert len(commits) == 15, commits
        assert all(batch.count("step_finished") == 1 for batch in commits)

    async def test_a_run_waiting_on_its_model_is_visible_at_once(self, make_runtime, scripted):
        """The flusher commits what a run logged as soon as the run waits, so another
        process sees it during its first model call, not after it."""
        from pilothouse import Model

        path = pilothouse.load_settings().store_path
        seen = []

        class Watching(Model):
            """Waits up to 2 s for its own step to show in another connection."""

            provider, name = "scripted", "watching"

            async def complete(self, request):
                db = sqlite3.connect(path)
                for _ in range(200):
                    await anyio.sleep(0.01)
                    types = [r[0] for r in db.execute("SELECT type FROM events ORDER BY id")]
                    if "step_started" in types:
                        seen.append(types)
                        break
                db.close()
                return text_reply("ok")

        scripted.provider.model = lambda name: Watching()
        c = crew({"type": "sequential", "steps": ["a"]}, {"a": {}})
        async with make_runtime() as rt:
            result = await rt.run(c, "go")
        assert result.ok
        assert seen == [["run_started", "step_started", "context_built"]]

    async def test_the_stored_json_is_the_events_own_json(self, make_runtime, scripted):
        # the log writes through the serializer directly (event_json), not model_dump_json
        scripted.tools.append(lookup)
        scripted.provider.enqueue(tool_reply("lookup", {"key": "k"}), text_reply("done <b>é"))
        c = crew({"type": "sequential", "steps": ["a"]}, {"a": {"tools": ["lookup"]}})
        async with make_runtime() as rt:
            await rt.run(c, "find k")
        db = sqlite3.connect(pilothouse.load_settings().store_path)
        rows = [row[0] for row in db.execute("SELECT data FROM events ORDER BY id")]
        db.close()
        assert len(rows) == 8
        assert rows == [parse_event(data).model_dump_json() for data in rows]


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

    async def test_runs_started_together_share_commits(self, make_runtime, scripted):
        """A model that answers without waiting never yields to the event loop; the
        step barrier does, so runs started together commit together (group commit)
        instead of each run finishing alone before the next one starts."""
        c = crew({"type": "sequential", "steps": ["a", "b"]}, {"a": {}, "b": {}})
        commits = []
        async with make_runtime() as rt:
            write = rt.store.write

            def counted(events):
                commits.append({e.run_id for e in events})
                write(events)

            rt.store.write = counted
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    tg.start_soon(rt.run, c, f"task {i}")
            assert len(rt.store.list_runs(status="succeeded", limit=100)) == 50
        assert len(commits) <= 10, f"{len(commits)} commits for 50 runs of 2 steps"
        assert max(len(runs) for runs in commits) == 50  # every run in one commit


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

    async def test_an_observer_that_keeps_failing_is_reported_once_then_counted(
        self, workspace, scripted, caplog, monkeypatch
    ):

        from pilothouse import repeats

        def broken(event):
            raise KeyError("no exporter")

        one = crew({"type": "sequential", "steps": ["a"]}, {"a": {}})
        settings = pilothouse.load_settings(default_model="scripted")
        with caplog.at_level(logging.ERROR, logger="pilothouse.store.eventlog"):
            async with pilothouse.Runtime(settings, plugins=[scripted]) as rt:
                rt.subscribe(broken)
                for i in range(3):
                    assert (await rt.run(one, f"task {i}")).ok
                reported = [r for r in caplog.records if "broken" in r.getMessage()]
                assert len(reported) == 1 and reported[0].exc_info is not None  # 18 failures
                monkeypatch.setattr(repeats, "REPEAT_S", 0.0)
                assert (await rt.run(one, "task 3")).ok
        again = [r.getMessage() for r in caplog.records if "broken" in r.getMessage()][1:]
        assert again[0] == (
            "event observer broken raised 18 more times (the last: KeyError: 'no exporter')"
        )
        assert all(r.exc_info is None for r in caplog.records[1:])

    async def test_without_a_store_events_still_reach_observers(self, workspace, scripted):
        seen = []
        settings = pilothouse.load_settings(default_model="scripted")
        async with pilothouse.Runtime(settings, plugins=[scripted], log_events=False) as rt:
            rt.subscribe(lambda e: seen.append(e.type))
            result = await rt.run(crew({"type": "sequential", "steps": ["a"]}, {"a": {}}), "t")
        assert result.ok and seen[0] == "run_started" and seen[-1] == "run_finished"
        assert not (workspace / ".pilothouse").exists()


class FlakyStore(SQLiteRunStore):
    """A store whose first ``fail`` writes fail as a full disk would."""

    fail = 1

    def write(self, events):
        from pilothouse.errors import StoreError

        if self.fail:
            self.fail -= 1
            raise StoreError("disk full")
        super().write(events)


def _started(run_id: str = "r1", ts: float = 1.0):
    from pilothouse.events import RunStarted

    return RunStarted(run_id=run_id, seq=1, ts=ts, crew="c", input="i", flow="sequential")


def _begin(store: SQLiteRunStore, run_id: str = "r1") -> None:
    """Log a run's start, now."""
    import time

    started = _started(run_id, ts=time.time())
    store.write([log_entry(started)])


class TestStoreFailure:
    async def test_a_failed_write_keeps_the_events_for_the_next_flush(self, tmp_path):
        from pilothouse.errors import StoreError
        from pilothouse.store.eventlog import EventLog

        store = FlakyStore(tmp_path / "runs.db")
        log = EventLog(store)
        log.emit(_started())
        with pytest.raises(StoreError, match="disk full"):
            await log.flush()
        await log.flush()
        assert [e.type for e in store.events("r1")] == ["run_started"]
        store.close()

    async def test_a_write_failing_again_the_same_way_is_reported_once(self, tmp_path, caplog):
        from pilothouse.errors import StoreError
        from pilothouse.store.eventlog import EventLog

        store = FlakyStore(tmp_path / "runs.db")
        store.fail = 3  # a full disk stays full for a while
        log = EventLog(store)
        log.emit(_started())
        with caplog.at_level(logging.ERROR, logger="pilothouse.store.eventlog"):
            for _ in range(3):
                with pytest.raises(StoreError, match="disk full"):
                    await log.flush()
            await log.flush()
        assert [r.getMessage() for r in caplog.records] == ["disk full"]
        assert [e.type for e in store.events("r1")] == ["run_started"]  # kept, then written
        store.close()

    async def test_a_flush_after_a_failed_background_write_retries_it(self, tmp_path):
        """With the flusher running, a flush after a failed commit asks it to try again
        (it sleeps after a failure until asked) instead of waiting forever."""
        from pilothouse.errors import StoreError
        from pilothouse.store.eventlog import EventLog

        store = FlakyStore(tmp_path / "runs.db")
        log = EventLog(store)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                await tg.start(log.run_flusher)
                log.emit(_started())
                with pytest.raises(StoreError, match="disk full"):
                    await log.flush()
                await log.flush()
                tg.cancel_scope.cancel()
        assert [e.type for e in store.events("r1")] == ["run_started"]
        store.close()


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
    from pilothouse.store.sqlite import SQLiteRunStore

    try:
        SQLiteRunStore(path).close()
    except Exception as exc:  # reported to the parent, which asserts none
        return repr(exc)
    return "ok"


def _store_under_load(tmp_path, monkeypatch, wal_limit, *, checkpointer=True):
    """A store that empties the WAL past ``wal_limit`` bytes, with one run started; and
    how to log a 4 KB event of it. ``checkpointer=False``: its background checkpointer
    never runs, as on a machine too busy to give it a turn."""
    from pilothouse.events import ErrorRaised, RunStarted
    from pilothouse.store import sqlite_wal

    monkeypatch.setattr(sqlite_wal, "WAL_LIMIT_BYTES", wal_limit)
    store = SQLiteRunStore(tmp_path / "runs.db")
    store._checkpointer = sqlite_wal.Checkpointer(store.path, store._checkpointing, 0.02)
    if checkpointer:
        store._checkpointer.start()
    else:
        store._checkpointer.stop = lambda: None  # never started: nothing to stop
    store.write([log_entry(RunStarted(run_id="r", seq=1, ts=1.0, crew="c", input="x",
                                      flow="sequential"))])  # fmt: skip

    def log_big(seq):
        event = ErrorRaised(run_id="r", seq=seq, ts=1.0, error_type="E", message="m" * 4000)
        store.write([log_entry(event)])

    return store, log_big


@pytest.mark.parametrize("checkpointer", [True, False], ids=["checkpointer", "starved"])
def test_the_wal_stays_bounded_under_steady_commits(tmp_path, monkeypatch, checkpointer):
    """A passive checkpoint never catches up with commits that keep coming, and SQLite
    only starts the WAL over once one has; a checkpointer thread starved of CPU (a
    busy machine) does not even try. The writer bounds the WAL itself: past its limit
    the next commit empties it."""
    limit = 512 * 1024
    store, log_big = _store_under_load(tmp_path, monkeypatch, limit, checkpointer=checkpointer)
    wal = tmp_path / "runs.db-wal"
    sizes = []
    for seq in range(2, 3000):  # ~75 MB through the WAL, one commit after another
        log_big(seq)
        sizes.append(wal.stat().st_size)
    emptied = store._wal_bound.attempts
    store.close()
    peak = max(sizes)
    assert emptied >= 10 and sizes.count(0) >= 10, (emptied, peak)
    assert peak <= limit + 64 * 1024, peak  # the limit and one commit's pages, not ~75 MB
    assert len(SQLiteRunStore(tmp_path / "runs.db").events("r")) == 2999  # nothing lost


def test_a_long_read_makes_the_writer_give_up_emptying_now_and_then_only(tmp_path, monkeypatch):
    """Emptying the WAL waits for readers: a reader in the middle of a long read (the
    monitor, a portal build) makes the writer give up after FORCED_WAIT_S, and try
    again only after the WAL has grown by another half limit, not at every commit
    (nor wait the 30 s a write waits for the write lock). Once the reader is gone,
    the WAL is emptied again."""
    import time

    from pilothouse.store import sqlite_wal

    limit = 256 * 1024
    monkeypatch.setattr(sqlite_wal, "FORCED_WAIT_S", 0.05)
    store, log_big = _store_under_load(tmp_path, monkeypatch, limit, checkpointer=False)
    wal = tmp_path / "runs.db-wal"
    reader = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM events").fetchone() == (1,)  # a snapshot
    slowest = 0.0
    commits = 600  # ~2.5 MB through the WAL: ~10 limits
    for seq in range(2, commits + 2):
        started = time.monotonic()
        log_big(seq)
        slowest = max(slowest, time.monotonic() - started)
    bound = store._wal_bound
    grew = wal.stat().st_size
    assert bound.gave_up == bound.attempts  # the reader kept the WAL from being emptied
    assert 1 <= bound.attempts <= 2 * grew // limit + 1, (bound.attempts, grew)
    assert slowest < 10, slowest  # a forced wait at a time, not a write's 30 s
    reader.execute("COMMIT")
    reader.close()
    for seq in range(commits + 2, commits + 100):  # the reader is gone: emptied again
        log_big(seq)
        if wal.stat().st_size == 0:
            break
    assert wal.stat().st_size == 0 and bound.threshold == limit
    store.close()
    assert len(SQLiteRunStore(tmp_path / "runs.db").events("r")) == seq


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
        store.write([log_entry(started)])
        store.put_live([("r1", "1", "Hel"), ("r1", "2", "Wor")])
        assert store.live("r1") == {"1": "Hel", "2": "Wor"}
        call = ModelCalled(run_id="r1", seq=2, ts=2.0, step_id="1", model="m:x", messages=[])
        store.write([log_entry(call)])
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
    from pilothouse.events import RunStarted, StepStarted
    from pilothouse.store.sqlite_migrations import MIGRATIONS

    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied REAL)")
    for migration in MIGRATIONS[:8]:  # the store as m008 left it
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
        store.write([log_entry(new)])
        assert [e.type for e in store.events("c-run")] == ["run_started"]
        numbers = dict(store._db.execute("SELECT id, no FROM runs"))
        assert numbers == {"b-run": 1, "a-run": 2, "c-run": 3}
    finally:
        store.close()


def _step_events(run_id: str, seq: int, step: str, persona: str, tokens: int, ts: float) -> list:
    """One logged step: started, one model call, finished (as log entries)."""
    from pilothouse.events import ModelCalled, StepFinished, StepStarted
    from pilothouse.model import Usage

    events = [
        StepStarted(run_id=run_id, seq=seq, ts=ts, step_id=step, persona=persona, input="x",
                    model="m:x"),
        ModelCalled(run_id=run_id, seq=seq + 1, ts=ts, step_id=step, model="m:x", messages=[],
                    usage=Usage(input_tokens=tokens, output_tokens=1), cost_usd=0.5),
        StepFinished(run_id=run_id, seq=seq + 2, ts=ts, step_id=step, persona=persona,
                     output="y"),
    ]  # fmt: skip
    return [log_entry(e) for e in events]


def _raw_row(path, run_id: str) -> tuple:
    db = sqlite3.connect(path)
    try:
        return db.execute(
            "SELECT steps, input_tokens, current_persona, last_seq FROM runs WHERE id = ?",
            (run_id,),
        ).fetchone()
    finally:
        db.close()


class TestSummaryRows:
    """A working run's summary row is rewritten at most every SUMMARY_LAG_S; every read
    folds in the events it lags, so nobody sees a stale summary."""

    def test_reads_fold_in_the_events_the_row_lags(self, tmp_path):
        import time

        from pilothouse.events import RunFinished

        path = tmp_path / "runs.db"
        store = SQLiteRunStore(path)
        try:
            now = time.time()
            _begin(store)
            store.write(_step_events("r1", 2, "1", "researcher", 10, now))
            store.write(_step_events("r1", 5, "2", "analyst", 20, now))
            assert _raw_row(path, "r1") == (0, 0, None, 1)  # the row is behind...
            for summary in (store.get_run("r1"), store.list_runs()[0],
                            store.runs_by_id(["r1"])[0]):  # fmt: skip
                # ...and no read shows it
                assert (summary.steps, summary.input_tokens, summary.cost_usd) == (2, 30, 1.0)
                assert (summary.current_persona, summary.current_step) == ("analyst", "2")
                assert summary.last_seq == 7 and summary.status == "running"
            done = RunFinished(run_id="r1", seq=8, ts=now, output="y", steps=2,
                               input_tokens=30, output_tokens=2, cost_usd=1.0)  # fmt: skip
            store.write([log_entry(done)])
            # a status change writes the row at once, with everything it lagged
            assert _raw_row(path, "r1") == (2, 30, None, 8)
            assert store.get_run("r1").status == "succeeded"
        finally:
            store.close()

    def test_a_row_lagging_long_enough_is_written_with_the_next_commit(self, tmp_path, monkeypatch):
        import time

        from pilothouse.store import summaries

        monkeypatch.setattr(summaries, "SUMMARY_LAG_S", 0.2)
        path = tmp_path / "runs.db"
        store = SQLiteRunStore(path)
        try:
            _begin(store)
            store.write(_step_events("r1", 2, "1", "researcher", 10, time.time()))
            assert _raw_row(path, "r1")[0] == 0
            time.sleep(0.25)
            store.write(_step_events("r1", 5, "2", "analyst", 20, time.time()))
            assert _raw_row(path, "r1") == (2, 30, "analyst", 7)
        finally:
            store.close()

    def test_closing_the_store_writes_the_rows_left_behind(self, tmp_path):
        import time

        path = tmp_path / "runs.db"
        store = SQLiteRunStore(path)
        _begin(store)
        store.write(_step_events("r1", 2, "1", "researcher", 10, time.time()))
        assert _raw_row(path, "r1")[0] == 0
        store.close()
        assert _raw_row(path, "r1") == (1, 10, "researcher", 4)

    def test_a_failed_write_does_not_count_its_events_twice(self, tmp_path):
        import time

        from pilothouse.errors import StoreError

        path = tmp_path / "runs.db"
        store = SQLiteRunStore(path)
        try:
            _begin(store)
            step = _step_events("r1", 2, "1", "researcher", 10, time.time())
            blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            store._db.execute("PRAGMA busy_timeout = 0")
            try:
                store.write(step)
            except StoreError:
                pass
            else:
                raise AssertionError("the write should have failed on the lock")
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            store.write(step)  # the event log retries the same batch
            assert (store.get_run("r1").steps, store.get_run("r1").input_tokens) == (1, 10)
        finally:
            store.close()
        assert _raw_row(path, "r1")[:2] == (1, 10)

    def test_taking_a_run_over_brings_its_row_up_to_date(self, tmp_path):
        """The process that died kept the lagging part in memory; the events have it."""
        import time

        from pilothouse.store.lease import HOST

        path = tmp_path / "runs.db"
        dead = SQLiteRunStore(path, owner=f"{HOST}:999999999:x")  # no such process
        _begin(dead)
        dead.write(_step_events("r1", 2, "1", "researcher", 10, time.time()))
        dead._behind = {}  # killed: what it held in memory is gone
        dead.close()
        assert _raw_row(path, "r1")[0] == 0
        heir = SQLiteRunStore(path, owner="heir:2:y")
        try:
            heir.take_over("r1")
            assert _raw_row(path, "r1") == (1, 10, "researcher", 4)
            heir.write(_step_events("r1", 5, "2", "analyst", 5, time.time()))
            assert (heir.get_run("r1").steps, heir.get_run("r1").input_tokens) == (2, 15)
        finally:
            heir.close()
        assert _raw_row(path, "r1") == (2, 15, "analyst", 7)


def test_a_suspended_run_leaves_no_streamed_text_behind(tmp_path):
    from pilothouse.events import RunStarted, RunSuspended

    store = SQLiteRunStore(tmp_path / "runs.db", owner="worker-1")
    try:
        started = RunStarted(run_id="r1", seq=1, ts=1.0, crew="c", input="x", flow="sequential")
        store.write([log_entry(started)])
        store.put_live([("r1", "1", "Hel")])
        store.write([log_entry(RunSuspended(run_id="r1", seq=2, ts=2.0, reason="stopped"))])
        assert store.live("r1") == {}  # the call it streamed will not go on
        (row,) = store._db.execute("SELECT status, owner FROM runs").fetchall()
        assert row == ("running", None)  # unfinished, free for any worker
    finally:
        store.close()
