"""Remote agents over A2A as personas: an agent built with the a2a-sdk's own server
classes, called from a crew through the SDK's client."""

from __future__ import annotations

import contextlib

import anyio
import pytest

from conftest import HELLO, escalated
from pilothouse.testing import crew_of, reply, run_crew

pytestmark = pytest.mark.slow


@pytest.fixture
def desk():
    """The fraud desk agent on 127.0.0.1: (executor, URL)."""
    from a2a_agent import FraudDesk, serve

    executor = FraudDesk()
    with serve(executor) as served:
        yield executor, served.url


def _agents(**agents):
    return {"a2a": {"agents": agents}}


async def test_a_remote_agent_is_a_persona_of_a_crew(
    ph_runtime, ph_model, desk, monkeypatch, receiver
):
    executor, url = desk
    monkeypatch.setenv("FRAUD_TOKEN", "t0ken-for-tests")
    ph_model.enqueue(reply("Application 17: income 52k, loan 10k, two prior loans repaid."))
    crew = crew_of({"type": "sequential", "steps": ["intake", "fraud"]},
                   {"intake": {"instructions": "Summarise the application."}})  # fmt: skip
    agent = {"url": url, "headers": {"Authorization": "Bearer ${FRAUD_TOKEN}"}}
    async with ph_runtime(plugins=_agents(fraud=agent)) as rt:
        result, events = await run_crew(rt, crew, "Check application 17")
    assert result.ok, result.error
    assert result.output == "Fraud risk: low. \n" + result.output.split("\n", 1)[1]
    assert result.output.endswith("words checked.")
    (sent,) = executor.received
    assert "Application 17: income 52k" in sent  # the step's input, with what came before
    assert executor.headers[0]["authorization"] == "Bearer t0ken-for-tests"
    (call,) = [e for e in events if e.type == "model_call" and e.model == "a2a:fraud"]
    assert call.request_id and call.usage.estimated  # the remote task's id is logged
    steps = [e.persona for e in events if e.type == "step_finished"]
    assert steps == ["intake", "fraud"]
    assert not any("t0ken" in e.model_dump_json() for e in events)  # never logged
    from click.testing import CliRunner

    from pilothouse.cli.base import cli

    shown = CliRunner().invoke(cli, ["show", result.run_id]).output
    assert f"model a2a:fraud [{call.request_id}]" in shown  # the agent and its task id
    (span,) = [s for s in receiver.spans if s.name == "chat fraud"]  # and in the trace
    assert span.attributes["gen_ai.provider.name"] == "a2a"
    assert span.attributes["gen_ai.response.id"] == call.request_id
    assert not any("t0ken" in str(s.attributes) for s in receiver.spans)


@pytest.mark.parametrize(
    ("asked", "says"),
    [
        ("explode", "the task ended failed: records offline"),
        ("refuse", "the task ended rejected: out of scope"),
    ],
)
async def test_a_task_that_fails_fails_the_step_with_the_agents_words(
    ph_runtime, desk, asked, says
):
    _executor, url = desk
    crew = crew_of({"type": "sequential", "steps": ["fraud"]}, {})
    async with ph_runtime(plugins=_agents(fraud={"url": url})) as rt:
        result, _events = await run_crew(rt, crew, f"please {asked}")
    assert not result.ok and says in result.error and "A2A agent 'fraud'" in result.error


async def test_an_unreachable_agent_is_named(ph_runtime):
    crew = crew_of({"type": "sequential", "steps": ["fraud"]}, {})
    async with ph_runtime(plugins=_agents(fraud={"url": "http://127.0.0.1:9"})) as rt:
        result, _events = await run_crew(rt, crew, "anything")
    assert not result.ok
    assert "A2A agent 'fraud' at http://127.0.0.1:9: cannot read its agent card" in result.error


@contextlib.contextmanager
def _served(folder, delay_ms=0, **env_extra):
    """``pilothouse a2a serve --port 0`` in ``folder``: its base URL."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    env["PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS"] = str(delay_ms)
    env.update(env_extra)
    server = subprocess.Popen([sys.executable, "-m", "pilothouse", "a2a", "serve", "--port", "0"],
                              cwd=folder, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = server.stderr.readline()
        assert "over A2A at http://127.0.0.1:" in line, line + server.stderr.read()
        yield line.split(" at ", 1)[1].split("/crews/", 1)[0]
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stderr.close()


def _workspace(folder):
    (folder / "crews").mkdir()
    (folder / "crews" / "hello.toml").write_text(HELLO)
    return folder


@pytest.fixture
def serving(tmp_path, request):
    """``pilothouse a2a serve --port 0`` in a workspace with the hello crew and the demo
    crews: (base URL, folder). ``@pytest.mark.parametrize("serving", [MS], indirect=True)``
    slows its offline model to MS per reply."""
    with _served(_workspace(tmp_path), getattr(request, "param", 0)) as url:
        yield url, tmp_path


async def _send(url: str, text: str, *, task=None, subject=None) -> list:
    """The stream of responses to one message, through the SDK's own client."""
    from a2a.client import ClientConfig, create_client
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types import Role, SendMessageRequest

    client = await create_client(url, ClientConfig(streaming=True))
    message = new_text_message(text, role=Role.ROLE_USER, task_id=task and task[0],
                               context_id=task and task[1])  # fmt: skip
    if subject is not None:
        message.metadata.update({"subject": subject})
    async with client:
        return [r async for r in client.send_message(SendMessageRequest(message=message))]


def _final(responses) -> tuple[str, str, list[str], list[str]]:
    """(task id, last state, status messages, artifact texts) of a stream."""
    from a2a.helpers.proto_helpers import get_message_text
    from a2a.types import TaskState

    task_id, context, state, said, made = "", "", "", [], []
    for r in responses:
        kind = r.WhichOneof("payload")
        if kind == "task":
            task_id, context = r.task.id, r.task.context_id
            state = TaskState.Name(r.task.status.state)
        elif kind == "status_update":
            task_id, context = r.status_update.task_id, r.status_update.context_id
            state = TaskState.Name(r.status_update.status.state)
            if r.status_update.status.HasField("message"):
                said.append(get_message_text(r.status_update.status.message))
        elif kind == "artifact_update":
            made += [p.text for p in r.artifact_update.artifact.parts]
    return (task_id, context), state, said, made


async def test_a_crew_served_over_a2a_answers_the_sdks_own_client(serving):
    import json

    import httpx
    from command import ph

    url, folder = serving
    with anyio.fail_after(60):
        task, state, said, made = _final(await _send(f"{url}/crews/hello/", "Say hi",
                                                     subject="ana"))  # fmt: skip
        card = httpx.get(f"{url}/crews/hello/.well-known/agent-card.json").json()
    assert state == "TASK_STATE_COMPLETED"
    assert "metadata 'subject'" in card["skills"][0]["description"]
    assert "greeter at work" in said and "checker at work" in said
    (output,) = made
    (run,) = json.loads(ph("runs", "--json", cwd=folder).stdout)
    assert run["crew"] == "hello" and run["output"] == output and run["status"] == "succeeded"
    assert run["subject"] == "ana"  # from the message's metadata
    assert said[0] == f"run {run['id']} of crew hello"
    shown = ph("show", run["id"], cwd=folder).stdout  # the run names the task it answered
    assert f"labels: a2a.context={task[1]}, a2a.crew=hello, a2a.task={task[0]}" in shown


async def test_a_crew_of_one_process_calls_a_crew_served_by_another(serving, ph_runtime):
    url, _folder = serving
    crew = crew_of({"type": "sequential", "steps": ["remote"]}, {})
    async with ph_runtime(plugins=_agents(remote={"url": f"{url}/crews/hello/"})) as rt:
        result, events = await run_crew(rt, crew, "Say hi to the loan desk")
    assert result.ok, result.error
    assert "Say hi to the loan desk" in result.output  # what the served crew answered
    (call,) = [e for e in events if e.type == "model_call"]
    assert call.model == "a2a:remote" and call.request_id


async def test_an_escalation_goes_input_required_and_the_callers_answer_settles_it(serving):
    from pilothouse.cli import DEMO_INPUT

    url, _folder = serving
    with anyio.fail_after(120):
        task, state, said, _ = _final(await _send(f"{url}/crews/marketing/", DEMO_INPUT))
        assert state == "TASK_STATE_INPUT_REQUIRED"
        assert said[-1].startswith("waiting for a person: escalation ")
        assert "approve:" in said[-1]
        wrong = _final(await _send(f"{url}/crews/marketing/", "maybe", task=task))
        assert wrong[1] == "TASK_STATE_INPUT_REQUIRED" and "answer approve" in wrong[2][-1]
        for _ in range(10):  # each escalation of the run, approved by the caller
            _, state, said, made = _final(await _send(f"{url}/crews/marketing/", "approve: ok",
                                                      task=task))  # fmt: skip
            if state != "TASK_STATE_INPUT_REQUIRED":
                break
    assert state == "TASK_STATE_COMPLETED" and made and "Helio" in made[0]


@pytest.mark.parametrize("serving", [3000], indirect=True)
async def test_cancelling_the_task_cancels_the_run(serving):
    import json

    from a2a.client import ClientConfig, create_client
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types import CancelTaskRequest, Role, SendMessageRequest, TaskState
    from command import ph

    url, folder = serving
    states: list[str] = []
    with anyio.fail_after(120):
        client = await create_client(f"{url}/crews/hello/", ClientConfig(streaming=True))
        canceller = await create_client(f"{url}/crews/hello/", ClientConfig(streaming=True))
        async with client, canceller:
            message = new_text_message("Say hi slowly", role=Role.ROLE_USER)
            async for r in client.send_message(SendMessageRequest(message=message)):
                kind = r.WhichOneof("payload")
                if kind == "status_update":
                    states.append(TaskState.Name(r.status_update.status.state))
                    if states == ["TASK_STATE_WORKING"] * 2:  # the greeter is at work
                        cancelled = await canceller.cancel_task(
                            CancelTaskRequest(id=r.status_update.task_id)
                        )
                        assert TaskState.Name(cancelled.status.state) == "TASK_STATE_CANCELED"
    assert states[-1] == "TASK_STATE_CANCELED"
    with anyio.fail_after(60):  # the run stops at its next checkpoint, in the server
        while (runs := json.loads(ph("runs", "--json", cwd=folder).stdout))[0]["status"] in (
            "running",
            "queued",
        ):
            await anyio.sleep(0.2)
    assert runs[0]["status"] == "cancelled"


@pytest.fixture(params=["sqlite", "postgres"])
def two_workers(tmp_path, request):
    """Two ``a2a serve`` processes on one run store (a SQLite file, or PostgreSQL):
    (URL of one, URL of the other, folder)."""
    env = {}
    if request.param == "postgres":
        env["PILOTHOUSE_STORE_URL"] = request.getfixturevalue("postgres_url")
    folder = _workspace(tmp_path)
    with _served(folder, **env) as one, _served(folder, **env) as other:
        yield one, other, folder


async def _get(url: str, task_id: str):
    from a2a.client import ClientConfig, create_client
    from a2a.types import GetTaskRequest

    client = await create_client(url, ClientConfig(streaming=True))
    async with client:
        return await client.get_task(GetTaskRequest(id=task_id))


async def _list(url: str):
    from a2a.client import ClientConfig, create_client
    from a2a.types import ListTasksRequest

    client = await create_client(url, ClientConfig(streaming=True))
    async with client:
        return await client.list_tasks(ListTasksRequest())


async def test_any_worker_answers_for_a_task_another_worker_started(two_workers):
    """tasks/get, the caller's answer and the end of the task, on the worker that did not
    start the run: it reads the run store, and follows the run there."""
    from a2a.helpers.proto_helpers import get_message_text
    from a2a.types import TaskState

    from pilothouse.cli import DEMO_INPUT

    one, other, _folder = two_workers
    with anyio.fail_after(120):
        task, state, said, _ = _final(await _send(f"{one}/crews/marketing/", DEMO_INPUT))
        assert state == "TASK_STATE_INPUT_REQUIRED"
        seen = await _get(f"{other}/crews/marketing/", task[0])
        assert (seen.id, seen.context_id) == task
        assert TaskState.Name(seen.status.state) == "TASK_STATE_INPUT_REQUIRED"
        assert get_message_text(seen.status.message) == said[-1]  # the same question
        assert get_message_text(seen.history[0]) == DEMO_INPUT
        for _ in range(10):  # each escalation approved through the other worker
            _, state, said, made = _final(await _send(f"{other}/crews/marketing/", "approve: ok",
                                                      task=task))  # fmt: skip
            if state != "TASK_STATE_INPUT_REQUIRED":
                break
        assert state == "TASK_STATE_COMPLETED" and made and "Helio" in made[0]
        # the worker that started it last said input-required; it reads how it ended
        ended = await _get(f"{one}/crews/marketing/", task[0])
        # and a worker that never held it lists it among the crew's tasks
        (listed,) = (await _list(f"{other}/crews/marketing/")).tasks
        hello = (await _list(f"{other}/crews/hello/")).tasks
    assert TaskState.Name(ended.status.state) == "TASK_STATE_COMPLETED"
    assert [p.text for a in ended.artifacts for p in a.parts] == made
    assert (listed.id, TaskState.Name(listed.status.state)) == (task[0], "TASK_STATE_COMPLETED")
    assert list(hello) == []  # another crew's tasks are its own


async def test_a_task_no_run_answers_is_not_found_and_another_crews_is_not_mixed_up(two_workers):
    from a2a.utils.errors import TaskNotFoundError

    one, other, _folder = two_workers
    with anyio.fail_after(60):
        task, state, _, _ = _final(await _send(f"{one}/crews/hello/", "Say hi"))
        assert state == "TASK_STATE_COMPLETED"
        assert (await _get(f"{other}/crews/hello/", task[0])).id == task[0]
        for url, task_id in [(f"{other}/crews/marketing/", task[0]),  # another crew's
                             (f"{other}/crews/hello/", "0f" * 16)]:  # fmt: skip
            with pytest.raises(TaskNotFoundError):
                await _get(url, task_id)


async def test_a_task_cancelled_at_another_worker_cancels_the_run(tmp_path):
    import json

    from a2a.client import ClientConfig, create_client
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types import CancelTaskRequest, Role, SendMessageRequest, TaskState
    from command import ph

    folder = _workspace(tmp_path)
    states: list[str] = []
    with _served(folder, 3000) as one, _served(folder, 3000) as other, anyio.fail_after(120):
        client = await create_client(f"{one}/crews/hello/", ClientConfig(streaming=True))
        canceller = await create_client(f"{other}/crews/hello/", ClientConfig(streaming=True))
        async with client, canceller:
            message = new_text_message("Say hi slowly", role=Role.ROLE_USER)
            async for r in client.send_message(SendMessageRequest(message=message)):
                if r.WhichOneof("payload") == "status_update":
                    states.append(TaskState.Name(r.status_update.status.state))
                    if states == ["TASK_STATE_WORKING"] * 2:  # the greeter is at work
                        cancelled = await canceller.cancel_task(
                            CancelTaskRequest(id=r.status_update.task_id)
                        )
                        assert TaskState.Name(cancelled.status.state) == "TASK_STATE_CANCELED"
        assert states[-1] == "TASK_STATE_CANCELED"  # the first worker saw its run end so
    (run,) = json.loads(ph("runs", "--json", cwd=folder).stdout)
    assert run["status"] == "cancelled"


@pytest.mark.parametrize(("decision", "text", "ends"), [
    ("edit", "52k", "Income noted: 52k."),
    ("reject", None, "asked for input and ana declined: not ours to give"),
])  # fmt: skip
async def test_a_remote_task_that_asks_for_input_asks_a_person_here(
    ph_runtime, desk, decision, text, ends
):
    """input-required becomes an escalation in this inbox; the person's answer goes back
    to the same remote task (or, refused, the task is cancelled and the step fails)."""
    executor, url = desk
    crew = crew_of({"type": "sequential", "steps": ["fraud"]}, {},
                   escalation={"timeout_s": 600, "on_reject": "revise"})  # fmt: skip
    async with (
        ph_runtime(plugins=_agents(fraud={"url": url})) as rt,
        escalated(rt, crew, "needs-income: score application 9", timeout=60) as (waiting, outcome),
    ):
        assert waiting.kind == "input_required"
        assert "yearly income" in waiting.evidence["text"]
        rt.store.decide(waiting.id, decision, by="ana", text=text, note="not ours to give")
    result, _events = outcome[0]
    if decision == "edit":
        assert result.ok and result.output == ends
        assert executor.received[1] == "52k"  # the answer went back to the same task
    else:
        assert not result.ok and ends in result.error
        assert len(executor.received) == 1


async def test_cancelling_a_run_cancels_the_remote_task(ph_runtime, desk):
    executor, url = desk
    crew = crew_of({"type": "sequential", "steps": ["fraud"]}, {})
    async with ph_runtime(plugins=_agents(fraud={"url": url})) as rt:
        outcome: list = []

        async def go():
            outcome.append(await run_crew(rt, crew, "take-your-time with application 3"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(go)
            with anyio.fail_after(60):
                await anyio.to_thread.run_sync(executor.working.wait, 60)
                (running,) = rt.store.list_runs()
                rt.store.request_cancel(running.id)
    result, _events = outcome[0]
    assert result.status == "cancelled"
    assert len(executor.cancelled) == 1  # the remote task was cancelled, not left working


RUNNER = """
import anyio, json, sys, pilothouse

async def main():
    settings = pilothouse.load_settings()
    async with pilothouse.Runtime(settings) as rt:
        if sys.argv[1] == "run":
            result = await rt.run("desk", "hold-on: score application 5", run_id="a2a-crash")
        else:
            result = await rt.resume("a2a-crash")
    print(json.dumps({"ok": result.ok, "output": result.output, "error": result.error}))

anyio.run(main)
"""


def test_a_resumed_run_reattaches_to_its_remote_task_instead_of_sending_again(tmp_path, desk):
    """kill -9 of the calling process while the remote task works; the task ends while
    nobody listens; the resumed run reads it by its logged id: the agent got one
    message, not two."""
    import json
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    executor, url = desk
    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "desk.toml").write_text('[flow]\nsteps = ["fraud"]\n')
    (tmp_path / "pilothouse.toml").write_text(f'[plugins.a2a.agents.fraud]\nurl = "{url}"\n')
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    runner = subprocess.Popen([sys.executable, "runner.py", "run"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def logged_ref() -> str | None:
        db = tmp_path / ".pilothouse" / "runs.db"
        if not db.exists():
            return None
        with sqlite3.connect(db) as conn:
            try:
                row = conn.execute("SELECT data FROM events WHERE type = 'remote_task'").fetchone()
            except sqlite3.OperationalError:  # no table yet
                return None
        return json.loads(row[0])["ref"] if row else None

    try:
        assert executor.working.wait(timeout=60), "the message never reached the agent"
        deadline = time.monotonic() + 60
        while (ref := logged_ref()) is None:  # the task id is committed before it goes on
            assert time.monotonic() < deadline, "the remote task id was never logged"
            time.sleep(0.05)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=30)
    executor.release.set()  # the task ends while nobody listens
    done = subprocess.run([sys.executable, "runner.py", "resume"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["ok"] and result["output"].startswith("Fraud risk: low.")
    assert len(executor.received) == 1  # re-attached by id, not sent again
    assert ref


async def test_a_card_that_does_not_parse_is_named(ph_runtime):
    """An agent URL whose card is not an agent card: one line naming the agent and the
    URL, the step failed, nothing sent."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class NotACard(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"name": 42, "skills": "none"'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotACard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        crew = crew_of({"type": "sequential", "steps": ["fraud"]}, {})
        async with ph_runtime(plugins=_agents(fraud={"url": url})) as rt:
            result, _events = await run_crew(rt, crew, "anything")
    finally:
        server.shutdown()
        server.server_close()
    assert not result.ok
    assert f"A2A agent 'fraud' at {url}: cannot read its agent card" in result.error


@pytest.mark.parametrize(("asked", "ok"), [("as-json please", True), ("in prose", False)])
async def test_a_remote_personas_output_is_checked_against_its_schema(ph_runtime, desk, asked, ok):
    executor, url = desk
    schema = {"type": "object", "required": ["risk"],
              "properties": {"risk": {"enum": ["low", "medium", "high"]}}}  # fmt: skip
    crew = crew_of({"type": "sequential", "steps": ["fraud"]}, {})
    async with ph_runtime(plugins=_agents(fraud={"url": url, "output_schema": schema})) as rt:
        result, _events = await run_crew(rt, crew, f"score application 8 {asked}")
    if ok:
        assert result.ok and result.output == '{"risk": "low"}'
    else:
        assert not result.ok and "schema" in result.error.lower()
        assert len(executor.received) > 1  # sent back with what was wrong, then given up


async def test_the_monitor_shows_a_remote_agents_progress_live(ph_runtime, ph_workspace, desk):
    """The real monitor app, driven by its Pilot, on the store a run with a remote persona
    writes: the agent's status shows in the live view while its task works."""
    from textual.widgets import DataTable, Static
    from watching import monitor, rendered, until

    executor, url = desk
    crew = crew_of({"type": "sequential", "steps": ["fraud"]}, {})
    async with (
        ph_runtime(plugins=_agents(fraud={"url": url})) as rt,
        anyio.create_task_group() as tg,
    ):
        done = anyio.Event()

        async def go():
            await rt.run(crew, "hold-on: check application 17")
            done.set()

        tg.start_soon(go)
        app = monitor(ph_workspace / ".pilothouse" / "runs.db")
        async with app.run_test(size=(120, 40)) as pilot:
            runs = app.query_one("#runs", DataTable)
            await until(pilot, lambda: runs.row_count == 1, what="the run in the fleet")
            await pilot.press("enter")
            live = app.screen.query_one("#live", Static)
            await until(pilot, lambda: live.display and "hold on" in rendered(live),
                        what="the remote agent's status, live")  # fmt: skip
            assert "[working]" in rendered(live)
            executor.release.set()
            with anyio.fail_after(60):
                await done.wait()
            await until(pilot, lambda: next(iter(app.feed.runs.values())).status == "succeeded",
                        what="the run to finish")  # fmt: skip


async def test_what_a_remote_agent_says_goes_through_the_personas_guardrails(ph_runtime, desk):
    """A remote agent's reply is model output like any other: the persona's output
    guardrails check it before it is the step's output."""
    _executor, url = desk
    crew = crew_of({"type": "sequential", "steps": ["fraud"]},
                   {"fraud": {"model": "a2a:fraud",
                              "guardrails": {"output": ["redact_pii"]}}})  # fmt: skip
    async with ph_runtime(plugins=_agents(fraud={"url": url})) as rt:
        result, events = await run_crew(rt, crew, "echo: write to ana@example.com today")
    assert result.ok, result.error
    assert result.output == "write to [email] today"
    (verdict,) = [e for e in events if e.type == "guardrail"]
    assert verdict.guardrail == "redact_pii" and verdict.action == "fix"


async def test_an_agent_without_the_sdk_installed_names_the_extra(ph_runtime, monkeypatch):
    """Checked before the run starts: the crew is not run at all."""
    import importlib.util

    import pilothouse

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "a2a" else real(name, *a))  # fmt: skip
    crew = crew_of({"type": "sequential", "steps": ["fraud"]}, {})
    async with ph_runtime(plugins=_agents(fraud={"url": "http://127.0.0.1:9/"})) as rt:
        with pytest.raises(pilothouse.ModelError, match=r"pip install 'pilothouse\[a2a\]'"):
            await rt.run(crew, "Check application 17")
        assert rt.store.list_runs() == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_serving_on_loopback_needs_no_token(host):
    from pilothouse import token_off_loopback

    token_off_loopback(host, None, "a2a.serve")  # nothing raised


def test_serving_off_loopback_needs_a_token():
    """The check `a2a serve` and `mcp serve` share: it names the setting and its variable."""
    from pilothouse import ConfigError, token_off_loopback

    with pytest.raises(ConfigError) as caught:
        token_off_loopback("0.0.0.0", None, "a2a.serve")
    assert str(caught.value) == (
        "a2a serve: 0.0.0.0 is reachable from other machines; set [plugins.a2a.serve] token"
        " (or PILOTHOUSE_PLUGINS__A2A__SERVE__TOKEN) so that clients must send it, or serve"
        " on 127.0.0.1"
    )
    token_off_loopback("0.0.0.0", "s3cret", "mcp.serve")  # a token: served


async def test_an_agent_that_hangs_fails_the_step_after_its_timeout(ph_runtime, desk):
    """An agent that never answers (it works on and on) fails the step with a line that
    says how long it waited, and its task is cancelled."""
    executor, url = desk
    crew = crew_of({"type": "sequential", "steps": ["fraud"]}, {})
    async with ph_runtime(plugins=_agents(fraud={"url": url, "timeout_s": 1})) as rt:
        result, events = await run_crew(rt, crew, "take-your-time with application 4")
    assert result.status == "failed"
    assert "A2A agent 'fraud' did not finish within 1 s" in result.error
    (started,) = [e for e in events if e.type == "remote_task"]  # the task it timed out on
    assert executor.cancelled == [started.ref]


def test_an_agent_killed_mid_task_fails_the_step_and_one_restarted_answers(tmp_path):
    """kill -9 of the agent's process while a task works: the step fails naming the agent
    (nothing hangs); the agent started again answers the next run."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import pilothouse

    agent_script = str(Path(__file__).parent / "a2a_agent.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}

    def start_agent():
        agent = subprocess.Popen([sys.executable, agent_script], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                 env=env)  # fmt: skip
        return agent, agent.stdout.readline().strip() + "/"

    agent, url = start_agent()
    crew = crew_of({"type": "sequential", "steps": ["fraud"]}, {})
    settings = pilothouse.load_settings(workspace=tmp_path, default_model="offline",
                                        plugins=_agents(fraud={"url": url}))  # fmt: skip

    async def go():
        async with pilothouse.Runtime(settings) as rt:

            def killed_once_it_works(event):
                if event.type == "remote_task":  # the task id is known: it is at work
                    agent.send_signal(signal.SIGKILL)

            rt.subscribe(killed_once_it_works)
            with anyio.fail_after(120):
                return await rt.run(crew, "hold-on: check application 5")

    try:
        result = anyio.run(go)
    finally:
        agent.wait(timeout=30)
        agent.stdin.close()
        agent.stdout.close()
    assert result.status == "failed"
    assert f"A2A agent 'fraud' at {url}" in result.error, result.error

    again, again_url = start_agent()
    try:
        restarted = pilothouse.load_settings(workspace=tmp_path, default_model="offline",
                                             plugins=_agents(fraud={"url": again_url}))  # fmt: skip

        async def once_more():
            async with pilothouse.Runtime(restarted) as rt:
                with anyio.fail_after(120):
                    return await rt.run(crew, "check application 6")

        answered = anyio.run(once_more)
    finally:
        again.stdin.close()
        again.wait(timeout=30)
        again.stdout.close()
    assert answered.ok and "Fraud risk: low." in answered.output, answered.error
