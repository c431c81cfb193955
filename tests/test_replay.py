"""Record and replay: a logged run re-runs offline, and divergence is found."""

from __future__ import annotations

import json
import subprocess
import sys

import pilothouse
from conftest import crew
from openai_server import reply, tool_calls
from pilothouse import tool
from pilothouse.audits.metrics import compute
from pilothouse.audits.replay import replay


def _crew(instructions="You are a."):
    return crew(
        {"type": "sequential", "steps": ["a", "b"]},
        {
            "a": {"instructions": instructions, "tools": ["stock"], "model": "openai:gpt-4o-mini"},
            "b": {"instructions": "You are b.", "model": "openai:gpt-4o-mini"},
        },
        name="replayable",
    )


async def test_a_recorded_run_replays_offline_without_calling_tools(
    openai_server, workspace, scripted, monkeypatch
):
    calls = []

    @tool(blocking=False)
    def stock(item: str, warehouse: str = "main") -> str:
        """Units in stock."""
        calls.append(item)
        return f"{item}: 12 units in {warehouse}"

    scripted.tools.append(stock)
    crew_obj = _crew()
    scripted_crews = [crew_obj]
    scripted.register_crews = pilothouse.hookimpl(
        lambda register: [register(c) for c in scripted_crews]
    )
    openai_server.enqueue(tool_calls(("stock", {"item": "Helio"})), reply("12 left"), reply("ok"))
    settings = pilothouse.load_settings()
    async with pilothouse.Runtime(settings, plugins=[scripted]) as rt:
        original = await rt.run(crew_obj, "How many Helio?")
    assert original.ok and calls == ["Helio"] and len(openai_server.received) == 3

    # the server is gone: replay must not need it
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    report = await replay(original.run_id, settings, plugins=[scripted])
    assert report.identical, report.reason
    assert (report.steps, report.served) == (2, 3)
    assert report.replay.output == original.output == "ok"
    assert calls == ["Helio"]  # the tool result came from the recording
    assert len(openai_server.received) == 3

    # change the crew: the replay diverges at the first step and says so
    scripted_crews[0] = _crew("You are a, now terse.")
    report = await replay(original.run_id, settings, plugins=[scripted])
    assert not report.identical and report.diverged_at == "1"
    assert "never sent" in report.reason


async def test_a_run_whose_model_failed_replays_the_same_failure(
    openai_server, workspace, scripted, monkeypatch
):
    # Before: the failed call was left out of the recording, so the replay "diverged at
    # the end" with a request the run "never sent".
    from openai_server import status

    scripted.register_crews = pilothouse.hookimpl(lambda register: register(_crew()))
    openai_server.enqueue(tool_calls(("stock", {"item": "Helio"})), status(404))

    @tool(blocking=False)
    def stock(item: str, warehouse: str = "main") -> str:
        """Units in stock."""
        return f"{item}: 12 units"

    scripted.tools.append(stock)
    settings = pilothouse.load_settings()
    async with pilothouse.Runtime(settings, plugins=[scripted]) as rt:
        original = await rt.run("replayable", "How many Helio?")
    assert original.status == "failed" and "HTTP 404" in original.error
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    report = await replay(original.run_id, settings, plugins=[scripted])
    assert report.identical, report.reason
    assert report.replay.status == "failed" and report.replay.error == original.error
    assert report.served == 2  # the reply with the tool call, then the failure


async def test_a_model_that_failed_over_to_its_fallback_replays_the_same_way(
    openai_server, workspace, scripted, monkeypatch
):
    # Before: a replay overrode every persona's model with the recording alone, so the
    # recorded failure had nothing to fall back to and the replay "diverged at step 1".
    from openai_server import status

    fallback = crew(
        {"type": "sequential", "steps": ["a"]},
        {"a": {"model": "openai:gpt-4o-mini", "fallbacks": ["offline"]}},
        name="fallback",
    )
    scripted.register_crews = pilothouse.hookimpl(lambda register: register(fallback))
    openai_server.enqueue(status(404))
    settings = pilothouse.load_settings()
    async with pilothouse.Runtime(settings, plugins=[scripted]) as rt:
        original = await rt.run("fallback", "Summarise the refund policy")
        switched = [e for e in rt.store.events(original.run_id) if e.type == "model_switched"]
    assert original.ok and len(switched) == 1
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    report = await replay(original.run_id, settings, plugins=[scripted])
    assert report.identical, report.reason
    assert report.replay.output == original.output and report.served == 2

    # a run made with --model tried no fallback: neither does its replay
    openai_server.enqueue(status(404))
    async with pilothouse.Runtime(settings, plugins=[scripted]) as rt:
        forced = await rt.run("fallback", "Summarise it", model="openai:gpt-4o-mini")
    assert forced.status == "failed"
    report = await replay(forced.run_id, settings, plugins=[scripted])
    assert report.identical, report.reason
    assert report.replay.error == forced.error and report.served == 1


def test_cli_replay_of_the_demo_is_identical(tmp_path):
    run = [sys.executable, "-m", "pilothouse"]
    done = subprocess.run([*run, "demo", "--json", "--wait", "0"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    run_id = json.loads(done.stdout)["run_id"]
    again = subprocess.run([*run, "replay", run_id, "--json"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["identical"] and report["steps"] == 4 and report["served"] == 5
    shown = subprocess.run([*run, "show", report["replay"], "--json"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    events = json.loads(shown.stdout)["events"]
    models = {e["model"] for e in events if e["type"] == "model_call"}
    assert models == {f"replay:{run_id}"}
    # the compliance flag is decided as in the recording, not waited on again (15 s)
    (decided,) = [e for e in events if e["type"] == "escalation_decided"]
    assert (decided["decision"], decided["by"]) == ("approve", "replay of policy:timeout")


def test_a_logged_call_rebuilds_the_request_it_sent():
    # Replay keys each recorded reply by the hash of the request its event rebuilds,
    # after the event went through the log's JSON: the two must hash alike.
    from pilothouse.events import ModelCalled, event_json, parse_event
    from pilothouse.model import Message, ModelRequest, ToolSpec, request_hash

    sent = ModelRequest(
        model="small",
        messages=[Message(role="system", content="You are a."), Message(role="user", content="é")],
        tools=[ToolSpec(name="stock", description="Units.", parameters={"type": "object"})],
        response_schema={"type": "object", "properties": {"b": {}, "a": {}}},
        max_output_tokens=64,
        temperature=0.2,
    )
    logged = ModelCalled(
        run_id="r", seq=3, ts=1.0, step_id="1", model="openai:small", text="ok",
        **sent.model_dump(exclude={"model"}),
    )  # fmt: skip
    stored = parse_event(event_json(logged))
    assert isinstance(stored, ModelCalled)
    assert request_hash(stored.request()) == request_hash(sent)
    # what the hash tells apart: everything sent but the model's name
    assert request_hash(sent.model_copy(update={"model": "other"})) == request_hash(sent)
    for change in (
        {"temperature": 0.3},
        {"max_output_tokens": 65},
        {"tools": []},
        {"response_schema": {"type": "object", "properties": {"a": {}, "b": {}}}},
    ):
        assert request_hash(sent.model_copy(update=change)) != request_hash(sent), change


DESK = """
[flow]
steps = ["clerk"]
[personas.clerk]
instructions = "You are the clerk."
retrievers = ["demo_corpus"]
retrieve_k = 1
memory_field = "remember"
[personas.clerk.output_schema]
type = "object"
[personas.clerk.output_schema.properties.answer]
type = "string"
[personas.clerk.output_schema.properties.remember]
type = "array"
items = {type = "string"}
"""


async def test_a_run_about_a_subject_replays_with_what_it_knew_then(workspace):
    # Before: the replay recalled nothing about the subject (it was not passed on), so
    # its first request already differed from the recording.
    (workspace / "crews").mkdir()
    (workspace / "crews" / "desk.toml").write_text(DESK)
    settings = pilothouse.load_settings()
    async with pilothouse.Runtime(settings) as rt:
        await rt.run("desk", "Ana asks how heavy the Helio 30 is.", subject="ana")
        knew = [m.id for m in rt.store.memories("ana")]
        second = await rt.run("desk", "Ana asks about the Helio 30 battery.", subject="ana")
        started = next(e for e in rt.store.events(second.run_id) if e.type == "run_started")
        rt.store.forget(subject="ana")  # gone from memory; the log still has it
    assert knew and started.recalled == knew
    report = await replay(second.run_id, settings)
    assert report.identical, report.reason
    async with pilothouse.Runtime(settings) as rt:
        assert rt.store.memories("ana") == []  # the replay kept nothing about Ana herself
        kept = rt.store.memories("replay:ana")
        replayed = rt.store.get_run(report.replay.run_id)
    assert kept and {m.run_id for m in kept} == {report.replay.run_id}
    # a replay checks a crew: marked, and left out of the fleet's figures like audits
    assert replayed.replay_of == second.run_id and replayed.check == "replay" and replayed.audit
    (fleet,) = compute(settings.store_path)
    (everything,) = compute(settings.store_path, audits=True)
    assert (fleet.runs, everything.runs) == (2, 3)
