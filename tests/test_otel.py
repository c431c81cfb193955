"""OpenTelemetry export to a real OTLP/HTTP receiver on 127.0.0.1 (protobuf decoded with
``opentelemetry-proto``): the trace of a crew run, content capture, a backend that is
down, and the export of runs already in the log."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import pytest

from conftest import FlagWord, crew, text_reply, tool_reply
from pilothouse import Passage, Retriever, tool

SECRET = "sk-live-0123456789abcdefghij"


class Sheet(Retriever):
    name = "sheet"

    async def search(self, query, *, k=4):
        return [Passage(id="sheet#1", text="The Helio 30 costs 189 euros.", source="sheet.md")]


def _crew():
    return crew(
        {"type": "sequential", "steps": ["researcher", "writer"]},
        {"researcher": {"model": "scripted:r1", "tools": ["lookup"], "retrievers": ["sheet"]},
         "writer": {"model": "scripted:w1", "guardrails": {"output": ["flag_word"]}}},
        on_flag="continue",
    )  # fmt: skip


def _with_tools(scripted):
    @tool(blocking=False)
    def lookup(sku: str) -> str:
        """Stock of a product."""
        return "12 in stock"

    scripted.tools.append(lookup)
    scripted.retrievers.append(Sheet())
    scripted.guardrails.append(FlagWord())
    scripted.provider.enqueue(
        tool_reply("lookup", {"sku": "H30"}),
        text_reply("12 in stock", tokens=(31, 7)),
        text_reply("a risky launch plan", tokens=(52, 11)),
    )


async def test_a_runs_trace_follows_the_genai_conventions(make_runtime, scripted, receiver):
    _with_tools(scripted)
    async with make_runtime() as rt:
        result = await rt.run(_crew(), f"Plan the launch; my key is {SECRET}",
                              labels={"a2a.task": "task-17"})  # fmt: skip
        events = rt.store.events(result.run_id)
    spans = {s.name: s for s in receiver.spans}
    assert len({s.trace_id for s in receiver.spans}) == 1
    root = spans["invoke_workflow test"]
    assert root.parent_id == "" and root.attributes["gen_ai.conversation.id"] == result.run_id
    assert root.attributes["pilothouse.label.a2a.task"] == "task-17"  # where the run came from
    assert root.resource["service.name"] == "loan-desk"
    research, writing = spans["invoke_agent researcher"], spans["invoke_agent writer"]
    assert research.parent_id == writing.parent_id == root.span_id
    chats = [s for s in receiver.spans if s.name.startswith("chat ")]
    assert sorted(s.name for s in chats) == ["chat r1", "chat r1", "chat w1"]
    assert all(s.kind == 3 for s in chats)  # CLIENT
    assert {s.parent_id for s in chats if s.name == "chat r1"} == {research.span_id}
    retrieval = spans["retrieval sheet"]
    assert retrieval.parent_id == research.span_id
    assert retrieval.attributes["pilothouse.passage_ids"] == ["sheet#1"]
    assert retrieval.attributes["gen_ai.data_source.id"] == "sheet"
    tool_span = spans["execute_tool lookup"]
    assert tool_span.parent_id == research.span_id
    assert tool_span.attributes["gen_ai.tool.name"] == "lookup"
    # token counts equal the log's
    logged = [e for e in events if e.type == "model_call"]
    sent = sorted((s.attributes["gen_ai.usage.input_tokens"],
                   s.attributes["gen_ai.usage.output_tokens"]) for s in chats)  # fmt: skip
    assert sent == sorted((e.usage.input_tokens, e.usage.output_tokens) for e in logged)
    w1 = spans["chat w1"]
    assert w1.attributes["gen_ai.provider.name"] == "scripted"
    assert w1.attributes["gen_ai.request.model"] == "w1"
    assert w1.attributes["gen_ai.operation.name"] == "chat"
    assert w1.attributes["pilothouse.cost_usd"] == pytest.approx((52 + 11) * 0.001)
    # the guardrail's flag is an event of the writer's step
    (flag,) = [a for name, a, _ in writing.events if name == "pilothouse.guardrail"]
    assert flag["pilothouse.action"] == "flag" and flag["pilothouse.guardrail"] == "flag_word"
    # times are the events' own, children inside their parents
    assert root.start <= research.start <= research.end <= writing.start <= root.end
    # the conventions' client metrics and the runs by status, through the same endpoint
    tokens = [(a, v) for n, a, v in receiver.points if n == "gen_ai.client.token.usage"]
    sent_in = sum(v[0] for a, v in tokens if a["gen_ai.token.type"] == "input")
    assert sent_in == sum(e.usage.input_tokens for e in logged)
    assert {a["gen_ai.request.model"] for a, _ in tokens} == {"r1", "w1"}
    durations = [v for n, _, v in receiver.points if n == "gen_ai.client.operation.duration"]
    assert sum(count for _, count in durations) == len(logged)
    runs = [(a, v) for n, a, v in receiver.points if n == "pilothouse.runs"]
    assert runs == [({"pilothouse.crew": "test", "pilothouse.status": "succeeded"}, 1)]
    # content is off by default: no prompt, reply or key in any byte sent
    raw = b"".join(receiver.bodies)
    for text in (b"Plan the launch", b"risky launch plan", b"12 in stock", SECRET.encode()):
        assert text not in raw


async def test_content_capture_sends_prompts_and_replies_redacted(
    make_runtime, scripted, receiver, monkeypatch
):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    _with_tools(scripted)
    async with make_runtime() as rt:
        await rt.run(_crew(), f"Plan the launch; my key is {SECRET}")
    spans = {s.name: s for s in receiver.spans}
    asked = json.loads(spans["chat w1"].attributes["gen_ai.input.messages"])
    assert any("Plan the launch" in (m["content"] or "") for m in asked) or any(
        "12 in stock" in (m["content"] or "") for m in asked
    )
    reply = json.loads(spans["chat w1"].attributes["gen_ai.output.messages"])
    assert reply[0]["content"] == "a risky launch plan"
    assert spans["execute_tool lookup"].attributes["gen_ai.tool.call.result"] == "12 in stock"
    root = spans["invoke_workflow test"]
    assert root.attributes["pilothouse.input"] == "Plan the launch; my key is [redacted]"
    assert SECRET.encode() not in b"".join(receiver.bodies)


async def test_a_failed_run_has_an_error_status(make_runtime, scripted, receiver):
    from pilothouse import ModelError

    scripted.provider.enqueue(ModelError("the server said no"))
    async with make_runtime() as rt:
        result = await rt.run(crew({"type": "sequential", "steps": ["a"]}, {"a": {}}), "go")
    assert result.status == "failed"
    spans = {s.name: s for s in receiver.spans}
    root = spans["invoke_workflow test"]
    assert root.status == 2 and root.message.startswith("model: ")  # ERROR
    chat = next(s for s in receiver.spans if s.name.startswith("chat "))
    assert chat.status == 2 and chat.attributes["error.type"] == "ModelError"


async def test_a_backend_that_is_down_costs_the_runs_nothing_and_is_told_once(
    make_runtime, scripted, receiver, caplog
):
    receiver.status = 503
    c = crew({"type": "sequential", "steps": ["a"]}, {"a": {}})
    with caplog.at_level(logging.WARNING, logger="pilothouse.otel"):
        async with make_runtime() as rt:
            results = [await rt.run(c, f"task {i}") for i in range(20)]
            exporter = rt.registry.observers["otlp"].value
            exporter.flush()
    assert all(r.ok for r in results)
    assert receiver.requests >= 1 and not receiver.spans
    told = sorted(r.getMessage() for r in caplog.records
                  if r.name.startswith(("pilothouse.otel", "opentelemetry")))  # fmt: skip
    # once per signal, however many batches failed
    assert len(told) == 2 and exporter.sender.failures >= 1
    assert told[0].startswith("otel: cannot send metrics to http://127.0.0.1:")
    assert told[1].startswith("otel: cannot send traces to http://127.0.0.1:")


def test_setting_off_and_no_endpoint_register_nothing(workspace, monkeypatch, otlp_app):
    import pilothouse

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert "otlp" not in pilothouse.Runtime(pilothouse.load_settings()).registry.observers
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_app[1])
    on = pilothouse.Runtime(pilothouse.load_settings()).registry.observers["otlp"].value
    assert on.describe() == (f"traces to {otlp_app[1]}/v1/traces, without content,"
                             f" metrics to {otlp_app[1]}/v1/metrics")  # fmt: skip
    off = pilothouse.Runtime(pilothouse.load_settings(plugins={"otel": {"export": "off"}}))
    assert "otlp" not in off.registry.observers


def test_export_otlp_sends_runs_already_in_the_log(workspace, receiver, otlp_app, monkeypatch):
    # a run made with no endpoint configured, sent afterwards
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    done = subprocess.run([sys.executable, "-m", "pilothouse", "run", "loans", "--input",
                           "Anna Berg asks for 5,000 euros", "--json"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    assert not receiver.spans
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_app[1])
    sent = subprocess.run([sys.executable, "-m", "pilothouse", "export", "otlp", "--since", "1d"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert "1 run(s)" in sent.stdout
    traces = {s.trace_id for s in receiver.spans}
    assert len(traces) == 1
    root = next(s for s in receiver.spans if s.parent_id == "")
    assert root.name == "invoke_workflow loans"
    assert root.attributes["gen_ai.conversation.id"] == run_id


@pytest.mark.slow
def test_a_run_killed_and_resumed_is_one_trace_with_each_step_once(tmp_path, receiver, otlp_app):
    import signal
    import time

    from conftest import finished_steps, stop

    folder = tmp_path / "w"
    (folder / "crews").mkdir(parents=True)
    (folder / "crews" / "slow.toml").write_text(
        '[flow]\nsteps = ["a", "b", "c", "d"]\n'
        + "".join(f'[personas.{p}]\ninstructions = "You are {p}."\n' for p in "abcd")
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    env |= {
        "PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS": "300",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_app[1],
    }
    start = [sys.executable, "-m", "pilothouse", "run", "slow", "-i", "plan it", "--json"]
    process = subprocess.Popen(start, cwd=folder, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while finished_steps(folder / ".pilothouse" / "runs.db") < 2:  # killed mid-run
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        stop(process)
    assert not receiver.spans  # the killed process never ended the run: it sent nothing
    env["PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS"] = "0"
    resume = [sys.executable, "-m", "pilothouse", "resume", "--all"]
    resumed = subprocess.run(resume, cwd=folder, env=env, capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert len({s.trace_id for s in receiver.spans}) == 1
    steps = [s for s in receiver.spans if s.name.startswith("invoke_agent ")]
    finished = [s for s in steps if not s.attributes.get("pilothouse.interrupted")]
    # each step once as finished, whichever process ran it; the one cut short is marked
    assert sorted(s.name for s in finished) == [f"invoke_agent {p}" for p in "abcd"]
    assert len({s.span_id for s in receiver.spans}) == len(receiver.spans)
    root = next(s for s in receiver.spans if s.parent_id == "")
    ((name, _, resumed_at),) = root.events
    assert name == "pilothouse.resumed"
    # spans of both processes: the killed one finished steps a and b, the next one d
    by_name = {s.name: s for s in finished}
    assert by_name["invoke_agent b"].end < resumed_at < by_name["invoke_agent d"].start


async def test_model_requests_carry_the_traceparent_of_their_call_span(
    workspace, receiver, openai_server
):
    import pilothouse

    settings = pilothouse.load_settings(default_model="openai:m1")
    c = crew({"type": "sequential", "steps": ["a", "b"]}, {"a": {}, "b": {}})
    async with pilothouse.Runtime(settings) as rt:
        await rt.run(c, "go")
    chats = {s.span_id: s for s in receiver.spans if s.name == "chat m1"}
    sent = openai_server.traceparents
    assert len(sent) == 2 and all(sent)
    for header in sent:
        version, trace, span, flags = header.split("-")
        assert (version, flags) == ("00", "01")
        assert span in chats and chats[span].trace_id == trace
    # without an exporter that traces, no header
    openai_server.reset()
    receiver.reset()
    async with pilothouse.Runtime(
        pilothouse.load_settings(default_model="openai:m1", plugins={"otel": {"export": "off"}})
    ) as rt:
        await rt.run(c, "go")
    assert openai_server.traceparents == [None, None] and not receiver.spans


async def test_an_escalation_and_its_decision_are_events_of_the_step(
    make_runtime, scripted, receiver
):
    scripted.guardrails.append(FlagWord())
    scripted.provider.enqueue(text_reply("a risky plan"))
    c = crew({"type": "sequential", "steps": ["w"]},
             {"w": {"guardrails": {"output": ["flag_word"]}}}, on_flag="escalate",
             escalation={"timeout_s": 0, "on_timeout": "approve"})  # fmt: skip
    async with make_runtime() as rt:
        result = await rt.run(c, "write")
    assert result.ok
    step = next(s for s in receiver.spans if s.name == "invoke_agent w")
    names = [name for name, _, _ in step.events]
    assert names == ["pilothouse.guardrail", "pilothouse.escalation", "pilothouse.decision"]
    decision = step.events[2][1]
    assert decision["pilothouse.decision"] == "approve"
    assert step.events[1][1]["pilothouse.kind"] == "guardrail"


def test_plugins_and_config_say_where_it_sends_never_the_headers(workspace, otlp_app):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PILOTHOUSE_", "OTEL_"))}
    host = otlp_app[1].removeprefix("http://")
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://user:pw-9s8d7f@{host}",
            "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer hdr-secret-123"}  # fmt: skip
    for command in ("plugins", "config"):
        shown = subprocess.run([sys.executable, "-m", "pilothouse", command], env=env,
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert f"traces to http://{host}/v1/traces, without content" in shown.stdout
        assert "pw-9s8d7f" not in shown.stdout and "hdr-secret-123" not in shown.stdout
    env["PILOTHOUSE_PLUGINS__OTEL__EXPORT"] = "off"
    off = subprocess.run([sys.executable, "-m", "pilothouse", "config"], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert re.search(r"^exporters +none \(export = off in \[plugins.otel\]\)$", off.stdout, re.M), (
        off.stdout
    )
