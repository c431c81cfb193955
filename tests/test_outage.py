"""The fleet rides out its database: a PostgreSQL that crashes and comes back, that stays
away past the bound, or that goes silent behind a partition; and a SQLite file that is
locked or full. Real servers (the pgserver wheel) on loopback; every wait is for an
event, bounded by a deadline that only a hang reaches."""

from __future__ import annotations

import time

import anyio
import psycopg
import pytest

import pilothouse
from conftest import crew, text_reply
from pg_outage import RestartablePostgres, SilentProxy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def restartable():
    """A PostgreSQL of this module's own: the tests crash it and start it again."""
    server = RestartablePostgres()
    yield server
    server.close()


@pytest.fixture
def pg(restartable):
    """The restartable server, up, with a fresh database: (server, URL)."""
    if not _accepts(restartable.url):
        restartable.start()
    return restartable, restartable.database()


def _accepts(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


class Gate:
    """A model reply that waits until the test opens the gate (and says it is waiting)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.waiting = anyio.Event()
        self.open = anyio.Event()

    async def __call__(self, request):
        self.waiting.set()
        await self.open.wait()
        return text_reply(self.text)


class GatedPlugin:
    """A ``gated`` model provider whose replies can wait at gates."""

    __name__ = "gated"

    def __init__(self) -> None:
        self.replies: list = []
        self.requests: list = []

    @pilothouse.hookimpl
    def register_models(self, register):
        plugin = self

        class _Model(pilothouse.Model):
            provider, name = "gated", "model"

            async def complete(self, request):
                plugin.requests.append(request)
                reply = plugin.replies.pop(0) if plugin.replies else text_reply("done")
                if isinstance(reply, Gate):
                    return await reply(request)
                return reply

        class _Provider(pilothouse.ModelProvider):
            name = "gated"

            def model(self, name):
                return _Model()

        register(_Provider())


THREE_STEPS = crew(
    {"type": "sequential", "steps": ["a", "b", "c"]},
    {name: {"instructions": f"You are {name}.", "model": "gated:model"} for name in "abc"},
)


def _events(url: str, run_id: str) -> list[str]:
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT type FROM events WHERE run_id = %s ORDER BY seq", (run_id,))
        return [t for (t,) in rows]


async def test_a_run_holds_its_finished_step_while_postgres_is_down(workspace, pg):
    """PostgreSQL crashes while step b's model call is out; the call comes back during
    the outage; the run waits at its barrier (not failed), and when the server is back
    the step is committed once, with no model call made again."""
    server, url = pg
    plugin = GatedPlugin()
    gate = Gate("b's answer")
    plugin.replies = [text_reply("a's answer"), gate, text_reply("c's answer")]
    settings = pilothouse.load_settings(store_url=url, store_timeout_s=5)
    async with pilothouse.Runtime(settings, plugins=[plugin]) as rt:
        result = await _run_past_a_gate(rt, gate, server.crash, server.start)
        store = rt.store
        assert store is not None
        assert result.ok, result.error
        assert result.output == "c's answer"
        assert not store.health.down and store.health.outages == 1
    types = _events(url, result.run_id)
    assert types.count("step_finished") == 3 and types.count("model_call") == 3
    assert len(plugin.requests) == 3  # no model call was made again
    assert types[-1] == "run_finished"


#: 4 personas in sequence, as a crew file
FLEET_CREW = '[flow]\nsteps = ["a", "b", "c", "d"]\n' + "".join(
    f'[personas.{name}]\ninstructions = "You are persona {name}."\n' for name in "abcd"
)


class Workers:
    """``pilothouse worker`` processes on one store, their output kept in files."""

    def __init__(self, workspace, url: str, **env: str) -> None:
        import os

        self.workspace = workspace
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
        self.env.update(PILOTHOUSE_STORE_URL=url, PILOTHOUSE_DEFAULT_MODEL="openai:gpt-4o-mini",
                        PILOTHOUSE_STORE_TIMEOUT_S="5")  # fmt: skip
        self.env.update(env)
        self.processes: list = []
        self.logs: list = []

    def start(self, concurrency: int = 6):
        import subprocess
        import sys

        log = open(self.workspace / f"worker-{len(self.logs)}.log", "w")  # noqa: SIM115
        self.logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", "pilothouse", "worker", "-c", str(concurrency)],
            cwd=self.workspace, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.processes.append(process)
        return process

    def said(self, index: int | None = None) -> str:
        """What the workers (or one of them) printed."""
        paths = sorted(self.workspace.glob("worker-*.log"))
        if index is not None:
            return paths[index].read_text()
        return "\n".join(f"{p.name}: {p.read_text()[-1500:]}" for p in paths)

    def stop(self) -> None:
        import signal

        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            process.wait(timeout=60)
        for log in self.logs:
            log.close()


def _queue(workspace, url: str, runs: int) -> list[str]:
    (workspace / "crews").mkdir(exist_ok=True)
    (workspace / "crews" / "fleet.toml").write_text(FLEET_CREW)
    queue = pilothouse.Runtime(pilothouse.load_settings(store_url=url))
    try:
        return [queue.queue("fleet", f"job {i}") for i in range(runs)]
    finally:
        queue.store.close()  # type: ignore[union-attr]


def _statuses(url: str) -> dict[str, int]:
    with psycopg.connect(url) as db:
        return dict(db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())


def _wait(condition, what: str, said, seconds: float = 120) -> None:
    """Until ``condition()`` holds; a hang fails with what the workers said."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen:\n{said()}"
        time.sleep(0.05)


def _log_is_whole(url: str) -> None:
    """Every step finished exactly once, every run's events numbered 1..n, each under
    its own run."""
    with psycopg.connect(url) as db:
        twice = db.execute(
            "SELECT run_id, step_id, COUNT(*) FROM events WHERE type = 'step_finished'"
            " GROUP BY run_id, step_id HAVING COUNT(*) > 1"
        ).fetchall()
        gaps = db.execute(
            "SELECT run_id FROM events GROUP BY run_id HAVING MAX(seq) != COUNT(*)"
        ).fetchall()
        stray = db.execute("SELECT COUNT(*) FROM events e LEFT JOIN runs r ON r.no = e.run_no"
                           " WHERE r.id IS NULL OR r.id != e.run_id").fetchone()  # fmt: skip
    assert twice == [] and gaps == [] and stray == (0,)


def test_workers_ride_out_a_postgres_crash(workspace, pg, openai_server, openai_app):
    """Two workers, 40 queued runs of four steps. PostgreSQL is stopped at once (a
    crash, a failover) while every run at work waits on its third model call; the calls
    are answered during the outage; the server starts again on the same address.
    Every run succeeds, no step finishes twice, no model call is made again, the
    workers never exit, and each says once that the store went and once that it came
    back."""
    server, url = pg
    app, _ = openai_app
    app.hold = lambda request: "persona c." in request["messages"][0]["content"]
    ids = _queue(workspace, url, 40)
    workers = Workers(workspace, url)
    try:
        for _ in range(2):
            workers.start(concurrency=6)
        # midway, made true: every run at work (2 x 6) holds its third call
        _wait(lambda: app.holding == 12, "12 runs at their third step", workers.said)
        crashed = time.time()
        server.crash()
        app.release()
        _wait(lambda: app.holding == 0 and app.in_flight == 0, "the held calls answered",
              workers.said)  # fmt: skip
        _wait(lambda: all("unreachable" in workers.said(i) for i in range(2)),
              "both workers noticing the outage", workers.said)  # fmt: skip
        assert all(p.poll() is None for p in workers.processes), workers.said()
        back = time.time()
        server.start()
        _wait(lambda: _statuses(url).get("succeeded") == len(ids), "every run succeeding",
              workers.said)  # fmt: skip
        took = time.time() - back
        assert all(p.poll() is None for p in workers.processes), workers.said()  # never exited
    finally:
        workers.stop()
    print(f"\nthe batch finished {took:.1f} s after the database was back")
    assert _statuses(url) == {"succeeded": len(ids)}
    _log_is_whole(url)
    per_persona: dict[str, int] = {}
    for request in app.received:
        persona = request["messages"][0]["content"].split("persona ")[1][0]
        per_persona[persona] = per_persona.get(persona, 0) + 1
    assert per_persona == {p: len(ids) for p in "abcd"}  # no model call made twice
    with psycopg.connect(url) as db:
        logged = db.execute("SELECT COUNT(*) FROM events WHERE type = 'model_call'").fetchone()
        late = db.execute(
            "SELECT COUNT(*) FROM events WHERE type = 'model_call' AND step_id = '3' AND ts > %s",
            (crashed,),
        ).fetchone()
    # every call the server answered is in the log, once: the 12 it answered while the
    # store was away among them (made after the crash, logged after the restart)
    assert logged == (len(app.received),) and late[0] >= 12
    for i in range(2):
        lines = workers.said(i).splitlines()
        assert sum("unreachable" in line for line in lines) == 1, workers.said(i)
        assert sum("reachable again after" in line for line in lines) == 1, workers.said(i)


def _held_at_third_step(app, url: str, workspace, runs: int, **env: str) -> tuple[list, Workers]:
    """Queue ``runs`` runs and start two workers (6 runs each at once) whose every run
    at work holds its third model call: what the outage tests start from."""
    app.hold = lambda request: "persona c." in request["messages"][0]["content"]
    ids = _queue(workspace, url, runs)
    workers = Workers(workspace, url, **env)
    for _ in range(2):
        workers.start(concurrency=6)
    _wait(lambda: app.holding == 12, "12 runs at their third step", workers.said)
    return ids, workers


def _run_events(url: str, event_type: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(url) as db:
        return db.execute(
            "SELECT run_id, data FROM events WHERE type = %s ORDER BY id", (event_type,)
        ).fetchall()


def test_past_the_bound_runs_are_suspended_then_resumed(workspace, pg, openai_server,
                                                        openai_app):  # fmt: skip
    """The database stays away longer than store_outage_s (2 s here): the runs at work
    are suspended (each logs why), none fails; when the database is back their
    finished steps and suspensions are committed, a worker resumes them and they
    succeed, still with no model call made twice."""
    server, url = pg
    app, _ = openai_app
    ids, workers = _held_at_third_step(app, url, workspace, 24, PILOTHOUSE_STORE_OUTAGE_S="2")
    try:
        server.crash()
        app.release()
        suspended = "suspended while the run store was unreachable"
        _wait(lambda: sum(workers.said(i).count(suspended) for i in range(2)) == 12,
              "the 12 runs at work suspended", workers.said)  # fmt: skip
        assert all(p.poll() is None for p in workers.processes), workers.said()
        server.start()
        _wait(lambda: _statuses(url).get("succeeded") == len(ids), "every run succeeding",
              workers.said)  # fmt: skip
        assert all(p.poll() is None for p in workers.processes), workers.said()
    finally:
        workers.stop()
    assert _statuses(url) == {"succeeded": len(ids)}
    _log_is_whole(url)
    suspended = {run_id for run_id, _ in _run_events(url, "run_suspended")}
    resumed = {run_id for run_id, _ in _run_events(url, "run_resumed")}
    assert len(suspended) == 12 and suspended <= resumed
    per_persona = {p: sum(f"persona {p}." in r["messages"][0]["content"] for r in app.received)
                   for p in "abcd"}  # fmt: skip
    assert per_persona == {p: len(ids) for p in "abcd"}  # the suspension lost no finished step


def test_a_partition_is_noticed_within_the_deadline_and_recovered(workspace, pg, openai_server,
                                                                  openai_app):  # fmt: skip
    """A proxy between the workers and PostgreSQL stops forwarding without closing
    anything (packets taken in, nothing answered): the workers' statements are given up
    at their deadline (store_timeout_s = 3), said once; when the proxy forwards again
    every run succeeds."""
    server, url = pg
    app, _ = openai_app
    proxy = SilentProxy(server.port)
    try:
        ids, workers = _held_at_third_step(app, proxy.url(url), workspace, 24,
                                           PILOTHOUSE_STORE_TIMEOUT_S="3")  # fmt: skip
        try:
            silenced = time.monotonic()
            proxy.silence()
            app.release()
            _wait(lambda: all("unreachable" in workers.said(i) for i in range(2)),
                  "both workers noticing the partition", workers.said)  # fmt: skip
            noticed = time.monotonic() - silenced
            assert all(p.poll() is None for p in workers.processes), workers.said()
            proxy.speak()
            _wait(lambda: _statuses(url).get("succeeded") == len(ids), "every run succeeding",
                  workers.said)  # fmt: skip
            assert all(p.poll() is None for p in workers.processes), workers.said()
        finally:
            workers.stop()
    finally:
        proxy.close()
    print(f"\nthe partition was noticed {noticed:.1f} s after it began (deadline 3 s)")
    assert _statuses(url) == {"succeeded": len(ids)}
    _log_is_whole(url)
    assert all("reachable again after" in workers.said(i) for i in range(2)), workers.said()


def test_a_worker_killed_during_an_outage_has_its_runs_taken_over(workspace, pg, openai_server,
                                                                  openai_app):  # fmt: skip
    """kill -9 of one worker while the database is down: once it is back, the other
    worker takes the dead one's runs over and they succeed (the step the dead worker
    finished during the outage was never logged, so it is run again: once)."""
    server, url = pg
    app, _ = openai_app
    ids, workers = _held_at_third_step(app, url, workspace, 24)
    victim = workers.processes[0]
    try:
        server.crash()
        app.release()
        _wait(lambda: "unreachable" in workers.said(0), "the victim noticing", workers.said)
        victim.kill()
        victim.wait(timeout=30)
        server.start()
        _wait(lambda: _statuses(url).get("succeeded") == len(ids), "every run succeeding",
              workers.said)  # fmt: skip
        assert workers.processes[1].poll() is None, workers.said()
    finally:
        workers.stop()
    assert _statuses(url) == {"succeeded": len(ids)}
    _log_is_whole(url)
    with psycopg.connect(url) as db:
        owners = {owner.split(":")[1] for (owner,) in db.execute("SELECT owner FROM runs")}
    assert str(victim.pid) not in owners  # every run was finished by the survivor
    assert len(_run_events(url, "run_resumed")) >= 6  # the victim's six runs at work


async def _run_past_a_gate(rt, gate: Gate, trouble, mend) -> pilothouse.RunResult:
    """Run THREE_STEPS; when step b's call waits at ``gate``, make ``trouble()``, let the
    call finish, wait for the store to be found unreachable, check the run still waits,
    then ``mend()`` and return how the run ended."""
    result: list[pilothouse.RunResult] = []

    async def go() -> None:
        result.append(await rt.run(THREE_STEPS, "the job"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(go)
        with anyio.fail_after(60):
            await gate.waiting.wait()
        trouble()
        gate.open.set()
        with anyio.fail_after(60):
            while not rt.store.health.down:
                await anyio.sleep(0.02)
        assert not result  # waiting at its barrier: neither failed nor finished
        mend()
    return result[0]


def _sqlite_types(path, run_id: str) -> list[str]:
    import sqlite3

    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT type FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
    finally:
        db.close()
    return [t for (t,) in rows]


async def test_a_sqlite_store_locked_beyond_its_busy_timeout_is_waited_out(workspace, caplog):
    """Another process holds the SQLite file's write lock longer than the busy timeout
    (made short here): the run waits with its finished step, one line says why, and it
    goes on when the lock is released."""
    import sqlite3

    plugin = GatedPlugin()
    gate = Gate("b's answer")
    plugin.replies = [text_reply("a's answer"), gate]
    async with pilothouse.Runtime(pilothouse.load_settings(), plugins=[plugin]) as rt:
        rt.store._db.execute("PRAGMA busy_timeout = 50")  # type: ignore[union-attr]
        other = sqlite3.connect(rt.settings.store_path, isolation_level=None)

        def lock() -> None:
            other.execute("BEGIN IMMEDIATE")

        result = await _run_past_a_gate(rt, gate, lock, lambda: other.execute("ROLLBACK"))
        other.close()
    assert result.ok, result.error
    types = _sqlite_types(rt.settings.store_path, result.run_id)
    assert types.count("step_finished") == 3 and len(plugin.requests) == 3
    said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(said) == 1 and "database is locked" in said[0]


async def test_a_full_disk_is_waited_out_and_nothing_is_lost(workspace, caplog):
    """The SQLite file cannot grow (SQLite's own 'database or disk is full', made true
    with max_page_count): the step's large answer waits, and is committed whole once
    there is room again."""
    plugin = GatedPlugin()
    gate = Gate("b's answer " + "x" * 200_000)  # needs new pages in the file
    plugin.replies = [text_reply("a's answer"), gate]
    async with pilothouse.Runtime(pilothouse.load_settings(), plugins=[plugin]) as rt:
        db = rt.store._db  # type: ignore[union-attr]

        def fill() -> None:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}")

        result = await _run_past_a_gate(
            rt, gate, fill, lambda: db.execute("PRAGMA max_page_count = 1073741823")
        )
    assert result.ok, result.error
    types = _sqlite_types(rt.settings.store_path, result.run_id)
    assert types.count("step_finished") == 3 and len(plugin.requests) == 3
    said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(said) == 1 and "full" in said[0]


async def test_the_monitor_says_since_when_the_store_is_away_and_reconnects(workspace, pg):
    """The real monitor (Pilot) on a PostgreSQL that crashes: its header says "run
    store unreachable since ..."; when the server is back the line goes, and a run
    made then shows up, read over a new connection."""
    from textual.widgets import DataTable

    from pilothouse.tui import Feed, MonitorApp

    server, url = pg
    app = MonitorApp(Feed(url), poll_interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        with anyio.fail_after(30):
            while app.feed.store is None:
                await pilot.pause(0.05)
        await anyio.to_thread.run_sync(server.crash)
        with anyio.fail_after(60):
            while "run store unreachable since" not in (app.feed.problem or ""):
                await pilot.pause(0.05)
        await anyio.to_thread.run_sync(server.start)
        settings = pilothouse.load_settings(store_url=url)
        async with pilothouse.Runtime(settings) as rt:
            done = await rt.run("newsdesk", "Write up the Helio 30 launch")
        runs = app.query_one("#runs", DataTable)
        with anyio.fail_after(60):
            while app.feed.problem or runs.row_count != 1:
                await pilot.pause(0.05)
        assert done.run_id[:6] in " ".join(str(c) for c in runs.get_row_at(0))


async def test_outages_are_counted_in_the_otel_metrics(workspace, pg, monkeypatch):
    """With an OTLP endpoint set, an outage is a count and a duration in the metrics a
    real receiver on 127.0.0.1 gets."""
    from otlp_receiver import OTLPReceiver

    from openai_server import serve

    server, url = pg
    receiver = OTLPReceiver()
    with serve(receiver) as endpoint:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.removesuffix("/v1"))
        plugin = GatedPlugin()
        gate = Gate("b's answer")
        plugin.replies = [text_reply("a's answer"), gate]
        settings = pilothouse.load_settings(store_url=url, store_timeout_s=5)
        async with pilothouse.Runtime(settings, plugins=[plugin]) as rt:
            assert "otlp" in rt.registry.observers
            result = await _run_past_a_gate(rt, gate, server.crash, server.start)
            away = rt.store.health.outages  # type: ignore[union-attr]
        # the runtime's close sends what was recorded
    assert result.ok and away == 1
    # cumulative points: the reader may export more than once (every 10 s, and at close)
    counted = [v for n, _, v in receiver.points if n == "pilothouse.store.outages"]
    lasted = [v for n, _, v in receiver.points if n == "pilothouse.store.outage.duration"]
    assert counted and counted[-1] == 1
    assert lasted and lasted[-1][1] == 1 and lasted[-1][0] > 0  # (sum s, count)


async def test_a_run_taken_over_during_an_outage_stops_where_it_was_and_goes_on_there(
    workspace, pg, caplog
):
    """Fencing. Process A (standing for another machine) cannot reach PostgreSQL (a
    silent proxy) while its run's step b finishes; its lease runs out (aged here) and
    process B takes the run over. When A reaches the store again, its first write finds
    the run held by B: A's events for it are not written, A stops the run, and B
    finishes it. The log holds each step once."""
    from pilothouse.store.open import open_location

    server, url = pg
    proxy = SilentProxy(server.port)
    plugin_a = GatedPlugin()
    gate = Gate("b's answer from A")
    plugin_a.replies = [text_reply("a's answer"), gate]
    plugin_b = GatedPlugin()
    plugin_b.replies = [text_reply("b's answer from B"), text_reply("c's answer from B")]
    elsewhere = pilothouse.load_settings(store_url=proxy.url(url), store_timeout_s=2)
    try:
        async with pilothouse.Runtime(elsewhere, plugins=[plugin_a]) as a, \
                pilothouse.Runtime(pilothouse.load_settings(store_url=url),
                                   plugins=[plugin_b]) as b:  # fmt: skip
            assert a.store is not None and b.store is not None
            a.store.owner = "another-machine:4242:a1b2c3"  # its lease is judged by age
            result: list[pilothouse.RunResult] = []

            async def go() -> None:
                result.append(await a.run(THREE_STEPS, "the job"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(go)
                with anyio.fail_after(60):
                    await gate.waiting.wait()
                run_id = a.engine.executing()[0]
                proxy.silence()
                gate.open.set()
                with anyio.fail_after(60):
                    while not a.store.health.down:
                        await anyio.sleep(0.02)
                with psycopg.connect(url, autocommit=True) as db:  # A's lease runs out
                    db.execute("UPDATE runs SET heartbeat = heartbeat - 120 WHERE id = %s",
                               (run_id,))  # fmt: skip
                b.store.take_over(run_id)
                proxy.speak()
            assert result[0].status == "suspended" and "taken over" in (result[0].error or "")
            assert a.store.taken_over(run_id)
            resumed = await b.resume(run_id, THREE_STEPS)
        assert resumed.ok and resumed.output == "c's answer from B"
    finally:
        proxy.close()
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT type, data FROM events WHERE run_id = %s ORDER BY seq",
                          (run_id,)).fetchall()  # fmt: skip
    finished = [data for kind, data in rows if kind == "step_finished"]
    assert len(finished) == 3 and not any("from A" in data for data in finished)
    assert sum("taken over by" in r.getMessage() for r in caplog.records) == 1
    store = open_location(url)
    try:
        assert store.get_run(run_id).status == "succeeded" and store.get_run(run_id).steps == 3
    finally:
        store.close()


async def test_a_commit_whose_answer_is_lost_is_not_applied_twice(workspace, pg):
    """The server applies a step's COMMIT but its answer never comes back (held by the
    proxy until the statement's deadline): the outcome is unknown to the runner, which
    tries again once the store answers. The retry inserts nothing twice and the run's
    summary is made again from its events: exact, not counted twice."""
    from pilothouse.store.open import open_location

    server, url = pg
    proxy = SilentProxy(server.port)
    plugin = GatedPlugin()
    gate = Gate("b's answer")
    plugin.replies = [text_reply("a's answer", tokens=(7, 3)), gate,
                      text_reply("c's answer", tokens=(7, 3))]  # fmt: skip
    settings = pilothouse.load_settings(store_url=proxy.url(url), store_timeout_s=2)
    try:
        async with pilothouse.Runtime(settings, plugins=[plugin]) as rt:
            result = await _run_past_a_gate(
                rt, gate, lambda: proxy.lose_reply_to(b"COMMIT"), proxy.speak
            )
            assert rt.store._unsure == set()  # type: ignore[union-attr]  # settled
    finally:
        proxy.close()
    assert result.ok, result.error
    with psycopg.connect(url) as db:
        types = [
            t
            for (t,) in db.execute(
                "SELECT type FROM events WHERE run_id = %s ORDER BY seq", (result.run_id,)
            )
        ]
    assert types.count("step_finished") == 3 and types.count("model_call") == 3
    store = open_location(url)
    try:
        summary = store.get_run(result.run_id)
    finally:
        store.close()
    assert (summary.steps, summary.input_tokens, summary.output_tokens) == (
        3,
        7 + 10 + 7,
        3 + 5 + 3,
    )


class GateRetriever:
    """A plugin with a ``gate`` retriever that finds nothing once the test opens it."""

    __name__ = "gate-retriever"

    def __init__(self) -> None:
        self.waiting = anyio.Event()
        self.open = anyio.Event()

    @pilothouse.hookimpl
    def register_retrievers(self, register):
        plugin = self

        class _Gate(pilothouse.Retriever):
            name = "gate"

            async def search(self, query, *, k=4):
                plugin.waiting.set()
                await plugin.open.wait()
                return []

        register(_Gate())


async def test_a_retrieval_waits_out_the_outage_of_a_pgvector_knowledge_base(workspace, pg):
    """The knowledge base lives in the same PostgreSQL: a retrieval made while the
    server is down is asked again (it is a read) until the server is back, on a new
    connection, and the run goes on with its passages."""
    server, url = pg
    corpus = workspace / "docs"
    corpus.mkdir()
    (corpus / "panel.md").write_text("# Panel\n\nThe Helio solar panel gives 30 watts.")
    settings = pilothouse.load_settings(store_url=url)
    from pilothouse.knowledge import open_knowledge

    registry = pilothouse.Runtime(settings, log_events=False).registry
    embedder = registry.get("embedders", "minilm").value
    kb = open_knowledge(settings, embedder)
    try:
        kb.ingest([corpus])
    finally:
        kb.close()
    asker = crew({"type": "sequential", "steps": ["researcher"]},
                 {"researcher": {"instructions": "Answer from the passages.", "model": "offline",
                                 "retrievers": ["gate", "knowledge"]}})  # fmt: skip
    gate = GateRetriever()
    async with pilothouse.Runtime(settings, plugins=[gate]) as rt:
        retriever = rt.registry.get("retrievers", "knowledge").value
        assert await retriever.search("watts", k=1)  # its connection is open
        search, refused = retriever.search, []

        async def counted(query, *, k=4):
            try:
                return await search(query, k=k)
            except pilothouse.StoreUnavailable:
                refused.append(query)
                raise

        retriever.search = counted
        result: list[pilothouse.RunResult] = []
        async with anyio.create_task_group() as tg:

            async def go() -> None:
                result.append(await rt.run(asker, "How many watts does the panel give?"))

            tg.start_soon(go)
            with anyio.fail_after(60):  # in the step, past its barrier: the crash comes now
                await gate.waiting.wait()
            server.crash()
            gate.open.set()
            with anyio.fail_after(60):
                while not refused:
                    await anyio.sleep(0.02)
            assert not result
            await anyio.to_thread.run_sync(server.start)
    assert result[0].ok, result[0].error
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT data FROM events WHERE run_id = %s AND type = 'retrieval'",
                          (result[0].run_id,)).fetchall()  # fmt: skip
    assert len(rows) == 2 and "30 watts" in rows[1][0]  # the gate's, then the knowledge base's


def test_a_worker_started_before_its_database_waits_for_it(workspace, pg, openai_server,
                                                           openai_app):  # fmt: skip
    """The database is down when the worker starts (a machine booting, a pod scheduled
    first): the worker says once that it waits, does not exit, and runs the queue once
    the database is up. A store that needs a fix (a wrong database name) still exits
    at once with exit code 6."""
    import subprocess
    import sys

    server, url = pg
    ids = _queue(workspace, url, 4)
    server.crash()
    workers = Workers(workspace, url)
    try:
        worker = workers.start(concurrency=4)
        _wait(lambda: "waiting for the run store" in workers.said(0), "the worker waiting",
              workers.said)  # fmt: skip
        assert worker.poll() is None
        server.start()
        _wait(lambda: _statuses(url).get("succeeded") == len(ids), "every run succeeding",
              workers.said)  # fmt: skip
        assert workers.said(0).count("waiting for the run store") == 1
    finally:
        workers.stop()
    wrong = url.rsplit("/", 1)[0] + "/no_such_database"
    env = {**workers.env, "PILOTHOUSE_STORE_URL": wrong}
    done = subprocess.run([sys.executable, "-m", "pilothouse", "worker", "--once"],
                          cwd=workspace, env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 6 and "does not exist" in done.stderr


def test_a_connection_made_before_a_recovery_does_not_start_a_new_outage():
    """A listener that finds out late (a loaded machine) that its connection died in an
    outage that is already over must not count a second outage."""
    from pilothouse.store.health import StoreHealth

    health = StoreHealth("postgresql://db/fleet")
    connected_at = health.recoveries  # a listener connects
    health.failed("server closed the connection")
    health.answered()  # the store answers again: the outage is over
    health.failed("server closed the connection", connected_at=connected_at)  # late news
    assert health.outages == 1 and not health.down
    health.failed("connection refused", connected_at=health.recoveries)  # a new outage
    assert health.outages == 2 and health.down


def test_a_closed_store_never_opens_a_connection_again(pg):
    """A statement that comes after its store was closed (a monitor's poll still in a
    thread when the app closes) fails instead of opening, and leaking, a new connection."""
    from pilothouse.store.open import open_location

    _, url = pg
    store = open_location(url)
    store.list_runs()
    store.close()
    with pytest.raises(pilothouse.StoreError, match="closed"):
        store.list_runs()
    assert store._db.conn.closed and store._db.reconnects == 0  # type: ignore[attr-defined]
