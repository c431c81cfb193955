"""Every flow, run by the engine against the scripted model."""

from __future__ import annotations

import pytest

from conftest import crew, text_reply, tool_reply
from pilothouse import ConfigError, ToolError, tool


def _types(rt, run_id):
    return [e.type for e in rt.store.events(run_id)]


class TestSequential:
    async def test_each_step_gets_the_previous_output(self, make_runtime, scripted):
        scripted.provider.enqueue(text_reply("facts"), text_reply("brief"), text_reply("copy"))
        c = crew(
            {"type": "sequential", "steps": ["a", "b", "c"]},
            {n: {"instructions": f"You are {n}."} for n in "abc"},
        )
        async with make_runtime() as rt:
            result = await rt.run(c, "the task")
        assert result.ok and result.output == "copy" and result.steps == 3
        requests = scripted.provider.requests
        assert requests[0].messages[-1].content == "the task"
        assert "Output of a:\nfacts" in requests[1].messages[-1].content
        assert "Output of b:\nbrief" in requests[2].messages[-1].content
        assert requests[2].messages[0].content == "You are c."

    async def test_nested_list_fans_out_and_joins(self, make_runtime, scripted):
        def echo(request):
            return text_reply(request.messages[0].content.split()[-1])

        scripted.provider.enqueue(text_reply("research"), echo, echo, text_reply("final"))
        c = crew(
            {"type": "sequential", "steps": ["r", ["x", "y"], "w"]},
            {n: {"instructions": f"You are {n}"} for n in "rxyw"},
        )
        async with make_runtime() as rt:
            result = await rt.run(c, "task")
            steps = [e.step_id for e in rt.store.events(result.run_id) if e.type == "step_finished"]
        assert result.ok and result.output == "final"
        assert sorted(steps) == ["1", "2.1", "2.2", "3"]
        last = scripted.provider.requests[-1].messages[-1].content
        assert "## x\nx" in last and "## y\ny" in last


class TestParallel:
    async def test_branches_run_at_once_and_join_merges(self, make_runtime, scripted):
        import anyio

        running = 0
        peak = 0

        async def slow_answer(request):
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.05)
            running -= 1
            return text_reply("note from " + request.messages[0].content)

        # The scripted queue holds sync callables; wrap the async one in a model.
        from pilothouse import Model

        class SlowModel(Model):
            provider, name = "scripted", "slow"

            async def complete(self, request):
                if request.messages[0].content == "join":
                    return text_reply("joined")
                return await slow_answer(request)

        scripted.provider.model = lambda name: SlowModel()
        c = crew(
            {"type": "parallel", "branches": ["p", "q", "r"], "join": "j"},
            {**{n: {"instructions": n} for n in "pqr"}, "j": {"instructions": "join"}},
        )
        async with make_runtime() as rt:
            result = await rt.run(c, "plan")
            finished = [e for e in rt.store.events(result.run_id) if e.type == "step_finished"]
        assert result.ok and result.output == "joined"
        assert peak == 3  # all three branches were in flight together
        assert {e.step_id for e in finished} == {"1.1", "1.2", "1.3", "2"}

    async def test_a_failing_branch_fails_the_run_and_cancels_siblings(
        self, make_runtime, scripted
    ):
        from pilothouse import ModelError

        scripted.provider.enqueue(ModelError("boom"), text_reply("ok"), text_reply("ok"))
        c = crew({"type": "parallel", "branches": ["p", "q"]}, {n: {} for n in "pq"})
        async with make_runtime() as rt:
            result = await rt.run(c, "plan")
        assert result.status == "failed" and result.error_kind == "model"
        assert "boom" in result.error


class TestHandoff:
    async def test_handoff_passes_the_message_and_ends_on_an_answer(self, make_runtime, scripted):
        scripted.provider.enqueue(
            tool_reply("transfer_to_billing", {"message": "refund invoice 42"}),
            text_reply("refund issued"),
        )
        c = crew(
            {"type": "handoff", "start": "triage", "routes": {"triage": ["billing", "tech"]}},
            {
                "triage": {"instructions": "You are triage."},
                "billing": {"instructions": "You are billing.", "description": "Money things."},
                "tech": {"instructions": "You are tech."},
            },
        )
        async with make_runtime() as rt:
            result = await rt.run(c, "I was charged twice")
            events = rt.store.events(result.run_id)
        assert result.ok and result.output == "refund issued"
        offered = {t.name for t in scripted.provider.requests[0].tools}
        assert offered == {"transfer_to_billing", "transfer_to_tech"}
        handoff = next(e for e in events if e.type == "handoff")
        assert (handoff.source, handoff.target) == ("triage", "billing")
        assert "refund invoice 42" in scripted.provider.requests[1].messages[-1].content
        assert not scripted.provider.requests[1].tools  # billing has no routes

    async def test_a_handoff_outside_the_routes_is_refused(self, make_runtime, scripted):
        # triage may hand off to tech only; a model that names billing (in the crew, but
        # not on triage's routes) gets an error back and the work stays with triage.
        scripted.provider.enqueue(
            tool_reply("transfer_to_billing", {"message": "refund invoice 42"}),
            text_reply("triage answers itself"),
        )
        c = crew(
            {"type": "handoff", "start": "triage", "routes": {"triage": ["tech"]}},
            {n: {"instructions": f"You are {n}."} for n in ("triage", "billing", "tech")},
        )
        async with make_runtime() as rt:
            result = await rt.run(c, "I was charged twice")
            events = rt.store.events(result.run_id)
        assert result.ok and result.output == "triage answers itself"
        assert not any(e.type == "handoff" for e in events)
        assert {e.persona for e in events if e.type == "step_started"} == {"triage"}
        refused = next(e for e in events if e.type == "tool_call")
        assert refused.error == (
            "'triage' has no tool named 'transfer_to_billing' (its tools: transfer_to_tech)"
        )

    async def test_a_persona_name_a_model_api_refuses_is_offered_under_a_safe_name(
        self, make_runtime, scripted
    ):
        # OpenAI and Anthropic take [A-Za-z0-9_-]{1,64} for a function name: a handoff to
        # 'billing.team' used to be offered as 'transfer_to_billing.team' (HTTP 400)
        scripted.provider.enqueue(
            tool_reply("transfer_to_billing_team", {"message": "refund 42"}), text_reply("done")
        )
        routes = {"triage": ["billing.team", "x" * 60]}
        personas = {n: {"instructions": f"You are {n}."} for n in ["triage", *routes["triage"]]}
        c = crew({"type": "handoff", "start": "triage", "routes": routes}, personas)
        async with make_runtime() as rt:
            result = await rt.run(c, "I was charged twice")
            events = rt.store.events(result.run_id)
        offered = [t.name for t in scripted.provider.requests[0].tools]
        assert offered == ["transfer_to_billing_team", ("transfer_to_" + "x" * 60)[:64]]
        assert result.ok and [e.target for e in events if e.type == "handoff"] == ["billing.team"]

    async def test_handoffs_whose_tool_names_would_clash_are_refused(self, make_runtime):
        c = crew({"type": "handoff", "start": "a", "routes": {"a": ["b.c", "b_c"]}},
                 {n: {} for n in ("a", "b.c", "b_c")})  # fmt: skip
        async with make_runtime() as rt:
            with pytest.raises(ConfigError, match="the handoff to 'b_c' would be offered as"):
                await rt.run(c, "x")

    def test_a_tool_name_a_model_api_refuses_is_refused(self):
        with pytest.raises(ToolError, match="model APIs take 1-64 letters"):

            @tool(name="lookup.invoice")
            def lookup(n: int) -> int:
                """Look up."""
                return n

    async def test_demo_support_crew_hands_off_offline(self, make_runtime):
        async with make_runtime(default_model="offline") as rt:
            result = await rt.run("support", "My invoice is wrong, I need billing")
            events = rt.store.events(result.run_id)
        assert result.ok
        assert [e.target for e in events if e.type == "handoff"] == ["billing"]


class TestSupervisor:
    FLOW = {"type": "supervisor", "supervisor": "lead", "workers": ["researcher", "writer"]}
    PERSONAS = {
        "lead": {"instructions": "You lead."},
        "researcher": {"instructions": "You research.", "description": "Finds facts."},
        "writer": {"instructions": "You write."},
    }

    async def test_the_supervisor_delegates_gets_the_output_back_and_answers(
        self, make_runtime, scripted
    ):
        scripted.provider.enqueue(
            tool_reply("transfer_to_researcher", {"message": "find the price"}),
            text_reply("189 euros"),
            tool_reply("transfer_to_writer", {"message": "one line on 189 euros"}),
            text_reply("The Helio 30: 189 euros."),
            text_reply("Done: The Helio 30: 189 euros."),
        )
        async with make_runtime() as rt:
            result = await rt.run(crew(self.FLOW, self.PERSONAS), "a launch note")
            events = rt.store.events(result.run_id)
        assert result.ok and result.output == "Done: The Helio 30: 189 euros."
        steps = [(e.step_id, e.persona, e.input) for e in events if e.type == "step_started"]
        assert [s[:2] for s in steps] == [("1", "lead"), ("2", "researcher"), ("3", "lead"),
                                         ("4", "writer"), ("5", "lead")]  # fmt: skip
        assert steps[1][2] == "find the price"
        handoffs = [(e.source, e.target) for e in events if e.type == "handoff"]
        assert handoffs == [("lead", "researcher"), ("lead", "writer")]
        requests = scripted.provider.requests
        assert {t.name for t in requests[0].tools} == {
            "transfer_to_researcher",
            "transfer_to_writer",
        }
        assert not requests[1].tools  # a worker answers; it hands nothing on
        # the supervisor sees every report, with what each worker was asked
        last = requests[4].messages[-1].content
        assert "## researcher (asked: find the price)\n189 euros" in last
        assert "## writer (asked: one line on 189 euros)\nThe Helio 30: 189 euros." in last
        assert last.startswith("Task: a launch note")

    async def test_delegations_count_as_handoffs_and_a_repeated_task_is_a_loop(
        self, make_runtime, scripted
    ):
        limited = {**self.PERSONAS}
        c = crew(self.FLOW, limited, limits={"max_handoffs": 1})
        scripted.provider.enqueue(
            tool_reply("transfer_to_researcher", {"message": "a"}), text_reply("x"),
            tool_reply("transfer_to_researcher", {"message": "b"}),
        )  # fmt: skip
        async with make_runtime() as rt:
            over = await rt.run(c, "go")
        assert over.status == "failed" and over.error_kind == "limit"
        assert "more than 1 handoffs" in over.error
        # asking a worker the same thing twice goes nowhere: the loop rule stops it
        scripted.provider.enqueue(
            tool_reply("transfer_to_researcher", {"message": "same"}), text_reply("x"),
            tool_reply("transfer_to_researcher", {"message": "same"}),
        )  # fmt: skip
        async with make_runtime() as rt:
            looped = await rt.run(crew(self.FLOW, self.PERSONAS), "go")
        assert looped.status == "failed" and looped.error_kind == "limit"
        assert "'researcher' received the same input a second time" in looped.error

    def test_a_supervisor_cannot_be_its_own_worker(self):
        from pydantic import ValidationError

        with pytest.raises(ValidationError, match="'lead' cannot be one of its own workers"):
            crew({**self.FLOW, "workers": ["lead"]}, self.PERSONAS)

    async def test_a_crew_file_supervisor_runs_offline(self, make_runtime, workspace):
        (workspace / "crews").mkdir()
        (workspace / "crews" / "desk.toml").write_text(
            '[flow]\ntype = "supervisor"\nsupervisor = "editor"\nworkers = ["pricing", "faults"]\n'
            '[personas.editor]\ninstructions = "You run the desk."\n'
            '[personas.pricing]\ndescription = "Answers refunds, invoices and prices."\n'
            '[personas.faults]\ndescription = "Answers broken or leaking kettles."\n'
        )
        async with make_runtime(default_model="offline") as rt:
            result = await rt.run("desk", "A refund for a leaking kettle")
            events = rt.store.events(result.run_id)
        assert result.ok
        # each worker once (the offline model does not ask a worker whose report it has)
        handoffs = [(e.target, e.message) for e in events if e.type == "handoff"]
        assert handoffs == [  # the better fit first ("leaking kettle"), the task handed on
            ("faults", "A refund for a leaking kettle"),
            ("pricing", "A refund for a leaking kettle"),
        ]
        assert [e.persona for e in events if e.type == "step_started"][-1] == "editor"

    async def test_demo_newsdesk_crew_supervises_offline(self, make_runtime):
        task = "A story on the Helio 30 market and its buyers, with the battery and price checked"
        async with make_runtime(default_model="offline") as rt:
            result = await rt.run("newsdesk", task)
            events = rt.store.events(result.run_id)
        assert result.ok
        assert [e.target for e in events if e.type == "handoff"] == ["fact_checker", "reporter"]
        assert "189 euros" in result.output  # a worker's finding made it into the story
