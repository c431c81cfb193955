"""Human on the loop: paused steps, decisions from another store handle or process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading

import anyio
import pytest

import pilothouse
from conftest import FlagWord, crew, stop, text_reply, tool_reply, wait_for_inbox
from pilothouse import DecisionError, tool
from pilothouse.store.sqlite import SQLiteRunStore


def _crew(**extra):
    return crew(
        {"type": "sequential", "steps": ["writer"]},
        {"writer": {"instructions": "Write.", "guardrails": {"output": ["flag_word"]}}},
        **extra,
    )


async def _wait_for_escalation(store, run_id=None, timeout=5.0):
    with anyio.fail_after(timeout):
        while True:
            waiting = store.escalations(run_id=run_id)
            if waiting:
                return waiting[0]
            await anyio.sleep(0.02)


@pytest.fixture
def other_store(workspace):
    """A second handle on the run store, as another process (the CLI) would open."""
    stores = []

    def open_store():
        store = SQLiteRunStore(pilothouse.load_settings().store_path)
        stores.append(store)
        return store

    yield open_store
    for store in stores:
        store.close()


class TestDecisions:
    @pytest.mark.parametrize(
        ("decision", "text", "output"),
        [("approve", None, "a careful plan"), ("edit", "a person's plan", "a person's plan")],
    )
    async def test_a_flag_pauses_the_run_until_a_person_decides(
        self, make_runtime, scripted, other_store, decision, text, output
    ):
        scripted.guardrails.append(FlagWord())
        scripted.provider.enqueue(text_reply("a risky plan"), text_reply("other run"))
        plain = crew({"type": "sequential", "steps": ["x"]}, {"x": {}}, name="plain")
        async with make_runtime() as rt, anyio.create_task_group() as tg:
            results = {}

            async def run(name, c, text_in):
                results[name] = await rt.run(c, text_in)

            tg.start_soon(run, "flagged", _crew(), "write")
            store = other_store()
            escalation = await _wait_for_escalation(store)
            assert store.get_run(escalation.run_id).status == "waiting_for_human"
            # another run goes on meanwhile
            await run("plain", plain, "go")
            assert results["plain"].ok and "flagged" not in results
            store.decide(escalation.id, decision, by="ana", note="fine", text=text)
        flagged = results["flagged"]
        assert flagged.ok and flagged.output == output
        events = other_store().events(flagged.run_id)
        raised = next(e for e in events if e.type == "escalation_raised")
        decided = next(e for e in events if e.type == "escalation_decided")
        assert (raised.kind, raised.risk, raised.proposed) == ("guardrail", 0.8, "a careful plan")
        assert raised.evidence == {
            "guardrail": "flag_word",
            "stage": "output",
            "text": "a risky plan",
            "spans": [],  # FlagWord says why but not where
            "sources": [],
            # what each choice will do, as the crew's rules (the defaults) say
            "policy": {"reject": "fail", "max_revisions": None, "on_timeout": "wait",
                       "timeout_s": None},
        }  # fmt: skip
        assert (decided.decision, decided.by, decided.note) == (decision, "ana", "fine")
        assert decided.ts - decided.decided_at < 1.5  # picked up within the poll interval
        assert other_store().get_run(flagged.run_id).status == "succeeded"

    async def test_reject_fails_the_run_or_sends_the_step_back(
        self, make_runtime, scripted, other_store
    ):
        scripted.guardrails.append(FlagWord())
        scripted.provider.enqueue(text_reply("risky one"), text_reply("risky two"),
                                  text_reply("a safe one"))  # fmt: skip
        async with make_runtime() as rt, anyio.create_task_group() as tg:
            results = []

            async def run(c):
                results.append(await rt.run(c, "write"))

            tg.start_soon(run, _crew())
            store = other_store()
            escalation = await _wait_for_escalation(store)
            store.decide(escalation.id, "reject", by="ana", note="too bold")
        assert results[0].status == "failed" and results[0].error_kind == "rejected"
        assert "ana rejected escalation" in results[0].error and "too bold" in results[0].error

        revise = _crew(escalation={"on_reject": "revise"})
        async with make_runtime() as rt, anyio.create_task_group() as tg:
            tg.start_soon(run, revise)
            escalation = await _wait_for_escalation(store)
            store.decide(escalation.id, "reject", by="ana", note="tone it down")
        assert results[1].ok and results[1].output == "a safe one"
        resent = scripted.provider.requests[-1].messages
        assert resent[-2].content == "risky two"
        assert "A reviewer sent this back: tone it down" in resent[-1].content

    async def test_deciding_twice_and_two_deciders_at_once(self, make_runtime, scripted,
                                                           other_store):  # fmt: skip
        scripted.guardrails.append(FlagWord())
        scripted.provider.enqueue(text_reply("risky"))
        async with make_runtime() as rt, anyio.create_task_group() as tg:
            tg.start_soon(rt.run, _crew(), "write")
            escalation = await _wait_for_escalation(other_store())
            outcomes = []
            barrier = threading.Barrier(4)

            def decide(who):
                store = SQLiteRunStore(pilothouse.load_settings().store_path)
                barrier.wait()
                try:
                    store.decide(escalation.id, "approve", by=who)
                    outcomes.append(("won", who))
                except DecisionError as exc:
                    outcomes.append(("lost", str(exc)))
                finally:
                    store.close()

            threads = [threading.Thread(target=decide, args=(f"p{i}",)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        winners = [o for o in outcomes if o[0] == "won"]
        assert len(winners) == 1
        assert all("was already decided: approve by " + winners[0][1] in o[1]
                   for o in outcomes if o[0] == "lost")  # fmt: skip
        with pytest.raises(DecisionError, match="already decided"):
            other_store().decide(escalation.id, "reject", by="late", note="x")

    async def test_a_decision_for_a_run_that_ended_is_refused(self, make_runtime, scripted,
                                                              other_store):  # fmt: skip
        scripted.guardrails.append(FlagWord())
        scripted.provider.enqueue(text_reply("risky"))
        async with make_runtime() as rt:
            result = await rt.run(_crew(limits={"timeout_s": 0.3}), "write")
        assert result.error_kind == "limit"
        # the run's end took the escalation out of the inbox: nobody is asked in vain
        assert other_store().escalations() == []
        (escalation,) = other_store().escalations(status=None)
        assert escalation.status == "withdrawn"
        assert escalation.note == f"run {result.run_id} failed before anyone decided"
        with pytest.raises(DecisionError, match=r"no longer waits: run .* failed before anyone"):
            other_store().decide(escalation.id, "approve", by="ana")

    @pytest.mark.parametrize(("policy", "status"), [("approve", "succeeded"), ("reject", "failed")])
    async def test_the_timeout_policy_decides_and_is_logged(self, make_runtime, scripted, policy,
                                                            status):  # fmt: skip
        scripted.guardrails.append(FlagWord())
        scripted.provider.enqueue(text_reply("risky"))
        c = _crew(escalation={"timeout_s": 0.2, "on_timeout": policy})
        async with make_runtime() as rt:
            result = await rt.run(c, "write")
            events = rt.store.events(result.run_id)
        decided = next(e for e in events if e.type == "escalation_decided")
        assert (decided.decision, decided.by) == (policy, "policy:timeout")
        assert decided.note == "no decision within 0.2 s" and result.status == status


class TestToolApproval:
    async def test_an_approval_is_bound_to_the_exact_arguments(self, make_runtime, scripted,
                                                               other_store):  # fmt: skip
        paid = []

        @tool(requires_approval=True, blocking=False)
        def refund(order: str, amount: float) -> str:
            """Refund an order."""
            paid.append((order, amount))
            return "refunded"

        scripted.tools.append(refund)
        scripted.provider.enqueue(
            tool_reply("refund", {"order": "A1", "amount": 20}),
            tool_reply("refund", {"order": "A1", "amount": 20}),  # same call: already approved
            tool_reply("refund", {"order": "A1", "amount": 500}),  # new arguments: ask again
            text_reply("done"),
        )
        c = crew(
            {"type": "sequential", "steps": ["clerk"]},
            {"clerk": {"tools": ["refund"]}},
            limits={"max_identical_tool_calls": 5},
        )
        async with make_runtime() as rt, anyio.create_task_group() as tg:
            results = []
            tg.start_soon(lambda: _collect(results, rt.run(c, "refund A1")))
            store = other_store()
            first = await _wait_for_escalation(store)
            assert first.kind == "tool_approval"
            assert first.evidence == {
                "tool": "refund",
                "arguments": {"amount": 20.0, "order": "A1"},
                # the crew fails on a rejection (the default): the view says so
                "policy": {"reject": "fail", "max_revisions": None, "on_timeout": "wait",
                           "timeout_s": None},
            }  # fmt: skip
            assert paid == []  # nothing ran before the approval
            store.decide(first.id, "approve", by="ana")
            with anyio.fail_after(5):
                while len(store.escalations()) == 0 or store.escalations()[0].id == first.id:
                    await anyio.sleep(0.02)
            second = store.escalations()[0]
            assert second.evidence["arguments"]["amount"] == 500.0
            store.decide(second.id, "edit", by="ana", text='{"order": "A1", "amount": 50}')
        assert results[0].ok and paid == [("A1", 20.0), ("A1", 20.0), ("A1", 50.0)]


async def _collect(results, awaitable):
    results.append(await awaitable)


class TestPolicy:
    async def test_a_risk_field_above_the_threshold_escalates(self, make_runtime, scripted):
        scripted.provider.enqueue(text_reply('{"decision": "deny", "risk": 0.9}'),
                                  text_reply('{"decision": "approve", "risk": 0.1}'))  # fmt: skip
        schema = {"type": "object", "required": ["decision", "risk"]}
        c = crew({"type": "sequential", "steps": ["underwriter"]},
                 {"underwriter": {"output_schema": schema, "risk_field": "risk"}},
                 escalation={"timeout_s": 0, "on_timeout": "approve"})  # fmt: skip
        async with make_runtime() as rt:
            high = await rt.run(c, "loan 1")
            low = await rt.run(c, "loan 2")
            raised = [e for e in rt.store.events(high.run_id) if e.type == "escalation_raised"]
            quiet = [e for e in rt.store.events(low.run_id) if e.type == "escalation_raised"]
        assert raised[0].kind == "policy" and raised[0].reason == "risk = 0.9 is above 0.7"
        assert high.ok and not quiet


class TestParallel:
    async def test_a_waiting_branch_does_not_hold_up_its_siblings(self, make_runtime, scripted,
                                                                  other_store):  # fmt: skip
        scripted.guardrails.append(FlagWord())

        def by_persona(request):
            return text_reply("risky" if "flagged" in request.messages[0].content else "clean")

        scripted.provider.enqueue(by_persona, by_persona)
        c = crew({"type": "parallel", "branches": ["a", "b"]},
                 {"a": {"instructions": "flagged", "guardrails": {"output": ["flag_word"]}},
                  "b": {"instructions": "plain"}})  # fmt: skip
        async with make_runtime() as rt, anyio.create_task_group() as tg:
            results = []
            tg.start_soon(lambda: _collect(results, rt.run(c, "go")))
            store = other_store()
            escalation = await _wait_for_escalation(store)
            with anyio.fail_after(5):
                while not any(e.type == "step_finished" and e.persona == "b"
                              for e in store.events(escalation.run_id)):  # fmt: skip
                    await anyio.sleep(0.02)
            store.decide(escalation.id, "approve", by="ana")
        assert results[0].ok and "## a\ncareful" in results[0].output


@contextlib.contextmanager
def _demo_waiting_for_a_person(folder):
    """The demo in another process, paused on its escalation: yields the process, its
    environment, the command and the escalation as ``inbox --json`` lists it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    run = [sys.executable, "-m", "pilothouse"]
    runner = subprocess.Popen(
        [*run, "demo", "--wait", "60", "--json"],
        cwd=folder, env=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        (escalation,) = wait_for_inbox(folder, base)
        yield runner, base, run, escalation
    finally:
        stop(runner)


@pytest.mark.slow
def test_the_demo_waits_for_a_person_deciding_from_another_terminal(tmp_path):
    with _demo_waiting_for_a_person(tmp_path) as (runner, base, run, escalation):
        assert escalation["persona"] == "compliance" and "guaranteed" in escalation["reason"]
        assert "is designed to charge a phone" in escalation["proposed"]
        edited = escalation["proposed"].replace("designed to", "built to")
        decided = subprocess.run([*run, "edit", escalation["id"], "--text", edited, "--by", "ana",
                                  "--note", "legal wording"], cwd=tmp_path, env=base,
                                 capture_output=True, text=True, timeout=30)  # fmt: skip
        assert decided.returncode == 0, decided.stderr
        out, err = runner.communicate(timeout=30)
    assert runner.returncode == 0, err
    result = json.loads(out)
    assert result["status"] == "succeeded" and result["output"] == edited
    again = subprocess.run([*run, "approve", escalation["id"]], cwd=tmp_path, env=base,
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert again.returncode == 3 and "was already decided: edit by ana" in again.stderr


async def test_edit_in_the_editor_from_the_cli(make_runtime, scripted, workspace, other_store):
    scripted.guardrails.append(FlagWord())
    scripted.provider.enqueue(text_reply("a risky plan"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    # click.edit runs "$EDITOR <file>" through the shell: this editor rewrites the file
    env["EDITOR"] = 'sh -c \'printf "%s" "written in the editor" > "$1"\' -'
    async with make_runtime() as rt, anyio.create_task_group() as tg:
        results = []
        tg.start_soon(lambda: _collect(results, rt.run(_crew(), "write")))
        escalation = await _wait_for_escalation(other_store())
        done = await anyio.to_thread.run_sync(lambda: subprocess.run(
            [sys.executable, "-m", "pilothouse", "edit", escalation.id, "--editor", "--by", "eve"],
            cwd=workspace, env=env, capture_output=True, text=True, timeout=60))  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert results[0].ok and results[0].output == "written in the editor"


@pytest.mark.slow
def test_cancelling_a_waiting_run_withdraws_its_escalation_from_the_inbox(tmp_path):
    with _demo_waiting_for_a_person(tmp_path) as (runner, base, run, escalation):
        cancel = subprocess.run([*run, "cancel", escalation["run_id"]], cwd=tmp_path, env=base,
                                capture_output=True, text=True, timeout=30)  # fmt: skip
        assert cancel.returncode == 0, cancel.stderr
        out, err = runner.communicate(timeout=30)
    assert json.loads(out)["status"] == "cancelled", err

    def inbox(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*run, "inbox", *flags], cwd=tmp_path, env=base,
                              capture_output=True, text=True, timeout=30)  # fmt: skip

    assert json.loads(inbox("--json").stdout) == []
    assert "nothing waits for a decision" in inbox().stdout
    listed = inbox("--all").stdout
    assert f"[withdrawn: run {escalation['run_id']} cancelled before anyone decided]" in listed
    late = subprocess.run([*run, "approve", escalation["id"]], cwd=tmp_path, env=base,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert late.returncode == 3 and "no longer waits" in late.stderr


async def test_an_escalation_is_read_once_the_store_holds_it(make_runtime, scripted):
    """What an observer of escalation_raised reads (A2A and MCP serving): the committed
    escalation, or NotFound naming an id the store never gets."""
    import anyio

    from conftest import FlagWord, crew, text_reply

    scripted.guardrails.append(FlagWord())
    scripted.provider.enqueue(text_reply("a risky plan"))
    raised: list[str] = []
    flagging = crew({"type": "sequential", "steps": ["writer"]},
                    {"writer": {"guardrails": {"output": ["flag_word"]}}})  # fmt: skip
    async with make_runtime() as rt, anyio.create_task_group() as tg:
        rt.subscribe(lambda e: raised.append(e.escalation_id)
                     if e.type == "escalation_raised" else None)  # fmt: skip
        tg.start_soon(rt.run, flagging, "plan")
        with anyio.fail_after(60):
            while not raised:
                await anyio.sleep(0.01)
        held = await rt.escalation(raised[0])  # asked at once, as an observer would
        assert held.id == raised[0] and held.reason == "says risky"
        with pytest.raises(pilothouse.NotFound):
            await rt.escalation("0123456789", within=0.1)
        rt.store.decide(held.id, "approve", by="ana")
