"""pilothouse on PostgreSQL end to end: the same commands with PILOTHOUSE_STORE_URL set,
and a connection that fails says why in one line (exit 6, nothing written)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import psycopg
import pytest

import pilothouse

pytestmark = pytest.mark.slow


def _cli(args, cwd, url, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    environment.update(PILOTHOUSE_STORE_URL=url, **env)
    return subprocess.run([sys.executable, "-m", "pilothouse", *args], cwd=cwd,
                          env=environment, capture_output=True, text=True, timeout=120)  # fmt: skip


async def test_a_crew_runs_on_postgres_and_the_log_is_there(workspace, postgres_url, monkeypatch):
    monkeypatch.setenv("PILOTHOUSE_STORE_URL", postgres_url)
    settings = pilothouse.load_settings()
    async with pilothouse.Runtime(settings) as rt:
        result = await rt.run("newsdesk", "Write up the Helio 30 launch")
    assert result.ok, result.error
    with psycopg.connect(postgres_url) as db:
        rows = db.execute(
            "SELECT type FROM events WHERE run_id = %s ORDER BY seq", (result.run_id,)
        )
        types = [t for (t,) in rows]
        finished = db.execute("SELECT status, steps FROM runs WHERE id = %s",
                              (result.run_id,)).fetchone()  # fmt: skip
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("step_finished") == result.steps and finished == ("succeeded", result.steps)
    assert not (workspace / ".pilothouse" / "runs.db").exists()  # nothing went to SQLite


def test_the_commands_read_and_decide_on_postgres(workspace, postgres_url):
    done = _cli(["demo", "--wait", "0"], workspace, postgres_url)
    assert done.returncode == 0, done.stderr
    runs = json.loads(_cli(["runs", "--json"], workspace, postgres_url).stdout)
    assert [r["status"] for r in runs] == ["succeeded"] and runs[0]["crew"] == "marketing"
    shown = _cli(["show", runs[0]["id"][:6]], workspace, postgres_url)
    assert shown.returncode == 0 and "step_finished" not in shown.stderr
    assert "compliance" in shown.stdout
    config = _cli(["config", "--json"], workspace, postgres_url)
    rows = {r["name"]: r for r in json.loads(config.stdout)}
    assert rows["store_url"]["source"] == "env PILOTHOUSE_STORE_URL"


def test_a_password_in_the_url_is_never_shown(workspace, postgres_server):
    url = postgres_server.get_uri().replace("postgres:@", "postgres:s3cret-pw@")
    config = _cli(["config"], workspace, url)
    assert "s3cret-pw" not in config.stdout + config.stderr and "********" in config.stdout


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql://pilot:pw@127.0.0.1:9/db", "nothing listens there"),
        ("mysql://pilot@127.0.0.1/db", "is not a PostgreSQL URL"),
    ],
)
def test_a_store_that_cannot_be_reached_says_why(workspace, url, said):
    done = _cli(["runs"], workspace, url)
    assert done.returncode == 6 if "nothing" in said else done.returncode == 3, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and said in lines[0], done.stderr
    assert "pw@" not in done.stderr  # the password stays masked in the message
    assert not (workspace / ".pilothouse" / "runs.db").exists()


def test_a_wrong_password_is_named_as_such(workspace, postgres_server):
    admin = postgres_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute("DROP ROLE IF EXISTS pilot")
        db.execute("CREATE ROLE pilot LOGIN PASSWORD 'right'")
        hba = db.execute("SHOW hba_file").fetchone()[0]
        rules = Path(hba).read_text()
        if "local all pilot scram-sha-256" not in rules:  # the server trusts everyone else
            Path(hba).write_text("local all pilot scram-sha-256\n" + rules)
            db.execute("SELECT pg_reload_conf()")
    url = admin.replace("postgres:@", "pilot:wrong@")
    done = _cli(["runs"], workspace, url)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 6 and len(lines) == 1, done.stderr
    assert "the password is wrong or missing" in lines[0] and ":wrong@" not in lines[0]
    right = _cli(["runs"], workspace, admin.replace("postgres:@", "pilot:right@"))
    lines = [line for line in right.stderr.splitlines() if line.strip()]
    # the right password gets in; a user who may not create tables is told so
    assert right.returncode == 6 and len(lines) == 1 and "may not create" in lines[0], right.stderr


def test_metrics_on_postgres_are_sqlites(workspace, postgres_url, tmp_path):
    """The same offline demo in a SQLite workspace and on PostgreSQL: the same numbers."""
    sqlite_side = tmp_path / "sqlite-side"
    sqlite_side.mkdir()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    for args in (["demo", "--wait", "0"], ["metrics", "--json"]):
        command = [sys.executable, "-m", "pilothouse", *args]
        local = subprocess.run(command, cwd=sqlite_side, env=environment, capture_output=True,
                               text=True, timeout=120)  # fmt: skip
        remote = _cli(args, workspace, postgres_url)
        assert local.returncode == remote.returncode == 0, local.stderr + remote.stderr
    mine, theirs = json.loads(remote.stdout), json.loads(local.stdout)

    def counted(rows):
        return [{k: v for k, v in row.items() if "latency" not in k and "queued" not in k}
                for row in rows]  # fmt: skip

    assert counted(mine) == counted(theirs)
    assert mine[0]["runs"] == 1 and mine[0]["model_calls"] >= 4 and mine[0]["escalations"] == 1


def test_the_portal_builds_from_postgres(workspace, postgres_url):
    # the server trusts local users: the password is there to be kept out of the pages
    postgres_url = postgres_url.replace("postgres:@", "postgres:s3cret-pw@")
    assert _cli(["demo", "--wait", "0"], workspace, postgres_url).returncode == 0
    run_id = json.loads(_cli(["runs", "--json"], workspace, postgres_url).stdout)[0]["id"]
    built = _cli(["portal", "build"], workspace, postgres_url)
    assert built.returncode == 0, built.stderr
    site = workspace / ".pilothouse" / "portal" / "site"
    page = next(site.rglob(f"*{run_id}*/index.html"), None) or next(site.rglob(f"*{run_id}*.html"))
    assert "compliance" in page.read_text()
    home = (site / "index.html").read_text()
    assert "marketing" in home
    assert not [p for p in site.rglob("*.html") if "s3cret-pw" in p.read_text()]


async def test_the_monitor_follows_a_postgres_store(workspace, postgres_url):
    from textual.widgets import DataTable

    from pilothouse.tui import Feed, MonitorApp

    postgres_url = postgres_url.replace("postgres:@", "postgres:s3cret-pw@")
    assert _cli(["demo", "--wait", "0"], workspace, postgres_url).returncode == 0
    app = MonitorApp(Feed(postgres_url), poll_interval=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        runs = app.query_one("#runs", DataTable)
        with anyio.fail_after(30):
            while runs.row_count != 1:
                await pilot.pause(0.05)
        row = " ".join(str(cell) for cell in runs.get_row_at(0))
        assert "marketing" in row and "succeeded" in row
        assert "s3cret-pw" not in str(app.sub_title) and "****" in str(app.sub_title)


#: 4 personas in sequence, as a crew file
FLEET_CREW = '[flow]\nsteps = ["a", "b", "c", "d"]\n' + "".join(
    f'[personas.{name}]\ninstructions = "You are persona {name}."\n' for name in "abcd"
)


def test_workers_on_many_machines_share_one_queue_and_survive_kills(
    workspace, postgres_url, openai_server
):
    """Processes stand for machines: 4 workers on one PostgreSQL take 300 queued runs
    of a crew whose model is the loopback OpenAI-compatible server (20 ms a call);
    two are killed (-9) midway and one more starts. Every run succeeds, every step
    finishes exactly once, and the killed workers' runs are taken over.

    "Midway" is made true, not raced for: the server answers every run's first step
    and holds the later ones until the kills are done (a fast machine drains the
    queue in about a second, faster than a poll could catch the workers at work)."""
    from pilothouse.store.open import open_location

    openai_server.latency = 0.02
    openai_server.hold = lambda request: "persona a." not in request["messages"][0]["content"]
    (workspace / "crews").mkdir()
    (workspace / "crews" / "fleet.toml").write_text(FLEET_CREW)
    queue = pilothouse.Runtime(pilothouse.load_settings(store_url=postgres_url))
    try:
        ids = [queue.queue("fleet", f"job {i}") for i in range(300)]
    finally:
        queue.store.close()  # type: ignore[union-attr]

    def finished() -> int:
        with psycopg.connect(postgres_url) as db:
            return db.execute("SELECT COUNT(*) FROM runs WHERE status = 'succeeded'").fetchone()[0]

    def start_worker():
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
        environment.update(PILOTHOUSE_STORE_URL=postgres_url,
                           PILOTHOUSE_DEFAULT_MODEL="openai:gpt-4o-mini")  # fmt: skip
        log = open(workspace / f"worker-{len(logs)}.log", "w")  # noqa: SIM115
        logs.append(log)
        return subprocess.Popen([sys.executable, "-m", "pilothouse", "worker", "-c", "12"],
                                cwd=workspace, env=environment, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip

    def said() -> str:
        """What the workers printed, for a failing assertion."""
        return "\n".join(f"{p.name}: {p.read_text()[-800:]}"
                          for p in sorted(workspace.glob("worker-*.log")))  # fmt: skip

    logs: list = []
    workers = [start_worker() for _ in range(4)]
    try:
        deadline = time.monotonic() + 100
        # midway, as the log shows it: each worker to be killed holds a run it has
        # taken a step of (so the kill leaves half-done runs behind, whatever the clock)
        victims = {str(w.pid) for w in workers[:2]}
        while not victims <= holding_started_runs(postgres_url):
            assert time.monotonic() < deadline, (
                f"the workers did not get going: victims {victims}, holding"
                f" {holding_started_runs(postgres_url)}, owners {owned_runs(postgres_url)},"
                f" {openai_server.counter} calls, {openai_server.holding} held\n{said()}"
            )
            time.sleep(0.02)
        for victim in workers[:2]:
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
        left = held_by(postgres_url, victims)  # what the dead workers held, unfinished
        killed = finished()
        openai_server.release()
        workers.append(start_worker())
        while finished() < len(ids):
            assert time.monotonic() < deadline, f"{finished()} of {len(ids)} finished:\n{said()}"
            time.sleep(0.1)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)
        for log in logs:
            log.close()
    assert killed < len(ids)  # the kills landed with work left to do
    store = open_location(postgres_url)
    try:
        assert {r.status for r in store.list_runs(limit=1000)} == {"succeeded"}
    finally:
        store.close()
    with psycopg.connect(postgres_url) as db:
        per_step = db.execute(
            "SELECT run_id, step_id, COUNT(*) FROM events WHERE type = 'step_finished'"
            " GROUP BY run_id, step_id"
        ).fetchall()
        gaps = db.execute(
            "SELECT run_id FROM events GROUP BY run_id HAVING MAX(seq) != COUNT(*)"
        ).fetchall()
        resumed = db.execute("SELECT COUNT(*) FROM events WHERE type = 'run_resumed'").fetchone()
        owners = db.execute("SELECT COUNT(DISTINCT owner) FROM runs").fetchone()[0]
        corrupt = db.execute("SELECT COUNT(*) FROM events e LEFT JOIN runs r ON r.no = e.run_no"
                             " WHERE r.id IS NULL OR r.id != e.run_id").fetchone()  # fmt: skip
    assert len(per_step) == 4 * len(ids) and {n for _, _, n in per_step} == {1}  # once each
    assert gaps == [] and corrupt == (0,)  # every run's events 1..n, each under its run
    # the dead workers' runs went on elsewhere: resumed, and finished by another worker
    assert left and resumed[0] >= 1
    with psycopg.connect(postgres_url) as db:
        rows = db.execute("SELECT owner FROM runs WHERE id = ANY(%s)", (list(left),)).fetchall()
    assert len(rows) == len(left) and owners >= 2
    assert not {owner.split(":")[1] for (owner,) in rows} & victims  # another worker finished them
    calls = db_calls(postgres_url)
    assert calls >= 4 * len(ids) and len(openai_server.received) >= calls  # all over HTTP


def owned_runs(url: str) -> dict[str, int]:
    """How many unfinished runs each owner holds."""
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT owner, status, COUNT(*) FROM runs WHERE status != 'succeeded'"
                          " GROUP BY owner, status").fetchall()  # fmt: skip
    return {f"{owner}/{status}": n for owner, status, n in rows}


def held_by(url: str, pids: set[str]) -> set[str]:
    """The unfinished runs whose owner is one of the processes ``pids``."""
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT id, owner FROM runs WHERE status != 'succeeded'").fetchall()
    return {run_id for run_id, owner in rows if owner and owner.split(":")[1] in pids}


def holding_started_runs(url: str) -> set[str]:
    """The process ids of the workers that hold a running run with a finished step."""
    with psycopg.connect(url) as db:
        rows = db.execute(
            "SELECT DISTINCT owner FROM runs r WHERE status = 'running' AND EXISTS"
            " (SELECT 1 FROM events e WHERE e.run_id = r.id AND e.type = 'step_finished')"
        ).fetchall()
    return {owner.split(":")[1] for (owner,) in rows if owner}


def db_calls(url: str) -> int:
    """Model calls the log holds that the model answered."""
    with psycopg.connect(url) as db:
        return db.execute("SELECT COUNT(*) FROM events WHERE type = 'model_call'"
                          " AND data::jsonb ->> 'error' IS NULL").fetchone()[0]  # fmt: skip


async def test_decisions_and_cancels_from_another_machine_arrive_by_notification(
    workspace, postgres_url, monkeypatch, scripted
):
    """The runner waits on LISTEN with no poll in between (quiet_s is longer than the
    test may take): a decision and a cancel made by other processes (the CLI) reach
    their runs through NOTIFY."""
    from conftest import FlagWord, crew, text_reply

    monkeypatch.setenv("PILOTHOUSE_STORE_URL", postgres_url)
    scripted.guardrails.append(FlagWord())
    scripted.provider.enqueue(text_reply("a risky plan"))
    writer = {"instructions": "Write.", "guardrails": {"output": ["flag_word"]}}
    flagging = crew({"type": "sequential", "steps": ["writer"]}, {"writer": writer})
    settings = pilothouse.load_settings(default_model="scripted")
    results: dict[str, pilothouse.RunResult] = {}
    async with pilothouse.Runtime(settings, plugins=[scripted, _WaitingPlugin()]) as rt:
        assert rt.engine.decisions is not None
        rt.engine.decisions.quiet_s = 600  # only a notification can wake it in time
        rt.engine.decisions.interval = 600

        async def go(name, task, run_crew):
            results[name] = await rt.run(run_crew, task)

        async with anyio.create_task_group() as tg:
            tg.start_soon(go, "decided", "write", flagging)
            with anyio.fail_after(30):
                while not rt.store.escalations():  # type: ignore[union-attr]
                    await anyio.sleep(0.02)
            escalation = rt.store.escalations()[0]  # type: ignore[union-attr]
            approve = ["approve", escalation.id, "--by", "ana"]
            decided = await anyio.to_thread.run_sync(lambda: _cli(approve, workspace, postgres_url))
            assert decided.returncode == 0, decided.stderr
            with anyio.fail_after(30):  # woken by NOTIFY: no poll comes for 600 s
                while "decided" not in results:
                    await anyio.sleep(0.02)
            store = rt.store
            assert store is not None
            decided_at = store.get_escalation(escalation.id).decided_at or 0.0
            woke = next(e.ts for e in store.events(escalation.run_id)
                        if e.type == "escalation_decided")  # fmt: skip
            print(f"\nthe waiting run logged the decision {woke - decided_at:.3f} s after it")

            slow = crew({"type": "sequential", "steps": ["sleeper"]},
                        {"sleeper": {"model": "waiting:forever"}})  # fmt: skip
            tg.start_soon(go, "cancelled", "sleep", slow)
            with anyio.fail_after(30):
                while not rt.engine.executing():
                    await anyio.sleep(0.02)
            run_id = rt.engine.executing()[0]
            cancel = ["cancel", run_id]
            done = await anyio.to_thread.run_sync(lambda: _cli(cancel, workspace, postgres_url))
            assert done.returncode == 0, done.stderr
            with anyio.fail_after(30):
                while "cancelled" not in results:
                    await anyio.sleep(0.02)
    assert results["decided"].ok and results["decided"].output == "a careful plan"
    assert results["cancelled"].status == "cancelled"


class _Waiting(pilothouse.Model):
    """A model that never answers (until its run is cancelled)."""

    provider, name = "waiting", "forever"

    async def complete(self, request):
        await anyio.sleep_forever()


class _WaitingProvider(pilothouse.ModelProvider):
    name = "waiting"

    def model(self, name):
        return _Waiting()


class _WaitingPlugin:
    __name__ = "waiting"

    @pilothouse.hookimpl
    def register_models(self, register):
        register(_WaitingProvider())


def test_a_workspace_moves_to_postgres_and_back_with_equal_digests(workspace, postgres_url):
    """A demo workspace (a decided escalation, a fact kept and one forgotten, an audit)
    copied to PostgreSQL, copied again (nothing doubles), then back to a new SQLite file."""
    from pilothouse.events import MemoryWritten, log_entry
    from pilothouse.store.base import AuditRecord
    from pilothouse.store.copy import digests
    from pilothouse.store.open import open_location

    environment = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}

    def local(*args):
        command = [sys.executable, "-m", "pilothouse", *args]
        return subprocess.run(command, cwd=workspace, env=environment, capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    assert local("demo", "--wait", "0").returncode == 0
    run_id = json.loads(local("runs", "--json").stdout)[0]["id"]
    store = open_location(workspace / ".pilothouse" / "runs.db")
    try:
        audit = AuditRecord(id="aud-1", kind="bias", crew="loans", created=1.0, ok=True,
                            summary="no gap", report={"gap": 0.01}, run_ids=[run_id])  # fmt: skip
        store.add_audit(audit)
        facts = [MemoryWritten(run_id=run_id, seq=100 + i, ts=2.0 + i, memory_id=f"m{i}",
                               subject="ana", channel="email", fact=f"fact {i}", persona="p")
                 for i in range(2)]  # fmt: skip
        store.write([log_entry(f) for f in facts])
        store.forget(memory_id="m0")
    finally:
        store.close()
    copied = local("store", "copy", "--to", postgres_url, "--json")
    assert copied.returncode == 0, copied.stderr
    report = json.loads(copied.stdout)
    assert report["mismatched"] == [] and report["uneven"] == []
    counts = report["counts"]
    assert (counts["runs"], counts["audits"], counts["escalations"], counts["memory"]) == (
        1,
        1,
        1,
        1,
    )
    again = json.loads(local("store", "copy", "--to", postgres_url, "--json").stdout)
    assert again["counts"] == counts  # idempotent: nothing doubled
    remote = open_location(postgres_url)
    try:
        assert remote.escalations() == [] and remote.escalations(status=None)[0].status == "approve"
        assert [m.fact for m in remote.memories("ana")] == ["fact 1"]  # forgotten stays so
        assert remote.get_audit("aud").report == {"gap": 0.01} and remote.get_audit("aud").ok
    finally:
        remote.close()

    back = workspace / "back.db"
    returned = _cli(["store", "copy", "--to", str(back), "--json"], workspace, postgres_url)
    assert returned.returncode == 0, returned.stderr
    assert json.loads(returned.stdout)["counts"] == counts
    original, copy_back = open_location(workspace / ".pilothouse" / "runs.db"), open_location(back)
    try:
        ours = digests(original)  # type: ignore[arg-type]
        assert ours == digests(copy_back) and list(ours) == [run_id]  # type: ignore[arg-type]
        assert original.get_run(run_id) == copy_back.get_run(run_id)
    finally:
        original.close()
        copy_back.close()
    itself = local("store", "copy", "--to", str(workspace / ".pilothouse" / "runs.db"))
    assert itself.returncode == 2 and "own store" in itself.stderr


def test_ingest_search_and_a_retrieving_crew_on_pgvector(workspace, postgres_url):
    """The same commands, the same results' format and provenance, on PostgreSQL."""
    corpus = Path(pilothouse.__file__).parent.parent.parent / "plugins" / "pilothouse_demo"
    corpus = corpus / "corpus"
    ingested = _cli(["ingest", str(corpus), "--tag", "demo"], workspace, postgres_url)
    assert ingested.returncode == 0, ingested.stderr
    assert "indexed" in ingested.stderr and "runs.db" not in ingested.stderr
    found = json.loads(_cli(["search", "solar panel watts", "-k", "3", "--json"], workspace,
                            postgres_url).stdout)  # fmt: skip
    assert len(found) == 3 and set(found[0]) == {"id", "text", "source", "score", "metadata"}
    assert found[0]["source"].startswith(str(corpus)) and "#" in found[0]["id"]
    assert "watt" in " ".join(p["text"] for p in found).lower()
    none = json.loads(_cli(["search", "solar", "--tag", "other", "--json"], workspace,
                           postgres_url).stdout)  # fmt: skip
    assert none == []
    (workspace / "crews").mkdir()
    (workspace / "crews" / "asker.toml").write_text(
        '[flow]\nsteps = ["researcher"]\n[personas.researcher]\n'
        'instructions = "Answer from the passages."\nretrievers = ["knowledge", "sqlite_vec"]\n'
    )
    ran = _cli(["run", "asker", "-i", "How many watts does the solar panel give?", "--json"],
               workspace, postgres_url)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]
    with psycopg.connect(postgres_url) as db:
        rows = db.execute("SELECT data FROM events WHERE run_id = %s AND type = 'retrieval'"
                          " ORDER BY seq", (run_id,)).fetchall()  # fmt: skip
    retrievals = [json.loads(data) for (data,) in rows]
    assert [r["retriever"] for r in retrievals] == ["knowledge", "sqlite_vec"]
    assert retrievals[0]["passages"] and retrievals[0]["passages"] == retrievals[1]["passages"]
    assert not (workspace / ".pilothouse" / "knowledge.db").exists()


def test_a_database_without_pgvector_says_so(workspace, postgres_server):
    """A user who cannot create the vector extension in a database that lacks it."""
    admin = postgres_server.get_uri()
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute("DROP DATABASE IF EXISTS novector WITH (FORCE)")
        db.execute("DROP ROLE IF EXISTS plain")
        db.execute("CREATE ROLE plain LOGIN")
        db.execute("CREATE DATABASE novector OWNER plain")
    url = admin.replace("postgres:@", "plain:@").replace("/postgres?", "/novector?")
    corpus = workspace / "docs"
    corpus.mkdir()
    (corpus / "a.md").write_text("# A\n\nSome text.")
    done = _cli(["ingest", str(corpus)], workspace, url)
    lines = [line for line in done.stderr.splitlines() if line.strip() and "ingesting" not in line]
    assert done.returncode == 6, done.stderr
    assert len(lines) == 1 and "no 'vector' extension (pgvector)" in lines[0]
    assert "CREATE EXTENSION vector" in lines[0]


async def test_the_monitor_hears_new_runs_without_polling(workspace, postgres_url):
    """Polls pushed out to 600 s: a run committed by another process still shows,
    announced by NOTIFY."""
    from textual.widgets import DataTable

    from pilothouse.tui import Feed, MonitorApp

    app = MonitorApp(Feed(postgres_url), poll_interval=600)
    async with app.run_test(size=(120, 40)) as pilot:
        with anyio.fail_after(30):
            while app.feed.store is None or (not app.feed.problem and app._fetching):
                await pilot.pause(0.05)
        runs = app.query_one("#runs", DataTable)
        assert runs.row_count == 0
        done = await anyio.to_thread.run_sync(
            lambda: _cli(["demo", "--wait", "0"], workspace, postgres_url)
        )
        assert done.returncode == 0, done.stderr
        with anyio.fail_after(30):
            while runs.row_count != 1 or "succeeded" not in str(runs.get_row_at(0)):
                await pilot.pause(0.05)


def test_without_the_postgres_extra_a_store_url_says_what_to_install(workspace):
    """psycopg made unimportable, as on an install without the extra."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    environment["PILOTHOUSE_STORE_URL"] = "postgresql://pilot:pw@db.internal/fleet"
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from pilothouse.cli import main; sys.argv = ['pilothouse', 'runs']; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=workspace, env=environment,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 6 and len(lines) == 1, done.stderr
    assert "pip install 'pilothouse[postgres]'" in lines[0] and ":pw@" not in lines[0]
    assert not (workspace / ".pilothouse").exists()  # nothing written
