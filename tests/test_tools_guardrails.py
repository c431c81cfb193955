"""Tool calls (bad arguments go back to the model) and guardrail verdicts."""

from __future__ import annotations

import pytest

from conftest import crew, text_reply, tool_reply
from pilothouse import Guardrail, Verdict, tool


@tool(blocking=False)
def add(a: int, b: int = 0) -> int:
    """Add two integers."""
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"kaboom: {reason}")


def _one_step(**persona):
    return crew({"type": "sequential", "steps": ["a"]}, {"a": persona})


async def _run(make_runtime, c, text="task"):
    async with make_runtime() as rt:
        result = await rt.run(c, text)
        return result, rt.store.events(result.run_id)


class TestToolCalls:
    def test_schema_comes_from_the_signature(self):
        spec = add.spec()
        assert spec.name == "add" and spec.description == "Add two integers."
        assert spec.parameters["properties"]["a"]["type"] == "integer"
        assert spec.parameters["required"] == ["a"]

    async def test_a_good_call_returns_its_result_to_the_model(self, make_runtime, scripted):
        scripted.tools.append(add)
        scripted.provider.enqueue(tool_reply("add", {"a": 2, "b": 3}), text_reply("five"))
        result, events = await _run(make_runtime, _one_step(tools=["add"]))
        assert result.output == "five"
        call = next(e for e in events if e.type == "tool_call")
        assert call.result == "5" and call.error is None
        tool_message = scripted.provider.requests[1].messages[-1]
        assert tool_message.role == "tool" and tool_message.content == "5"

    @pytest.mark.parametrize(
        ("name", "arguments", "expected"),
        [
            (
                "add",
                '{"a": "two"}',
                "invalid arguments for 'add': a: Input should be a valid integer",
            ),
            ("add", "{}", "a: Field required"),
            ("add", '{"a": 1, "c": 2}', "c: Extra inputs are not permitted"),
            ("add", "{not json", "not valid JSON"),
            ("add", "[1, 2]", "must be a JSON object"),
            ("subtract", '{"a": 1}', "'a' has no tool named 'subtract' (its tools: add, explode)"),
            ("explode", '{"reason": "x"}', "raised RuntimeError: kaboom: x"),
        ],
    )
    async def test_bad_calls_are_errors_for_the_model(
        self, make_runtime, scripted, name, arguments, expected
    ):
        scripted.tools += [add, explode]
        scripted.provider.enqueue(tool_reply(name, arguments), text_reply("recovered"))
        result, events = await _run(make_runtime, _one_step(tools=["add", "explode"]))
        assert result.ok and result.output == "recovered"
        call = next(e for e in events if e.type == "tool_call")
        assert call.result is None and expected in call.error
        fed_back = scripted.provider.requests[1].messages[-1].content
        assert fed_back.startswith("error: ") and expected in fed_back

    async def test_a_huge_result_is_cut_before_the_model_gets_it(self, make_runtime, scripted):
        @tool(blocking=False)
        def fetch(url: str) -> str:
            """Fetch a page."""
            return "x" * 50_000

        scripted.tools.append(fetch)
        scripted.provider.enqueue(tool_reply("fetch", {"url": "http://a"}), text_reply("read"))
        c = crew({"type": "sequential", "steps": ["a"]}, {"a": {"tools": ["fetch"]}},
                 limits={"max_tool_result_chars": 1000})  # fmt: skip
        result, events = await _run(make_runtime, c)
        expected = "x" * 1000 + "\n[... cut: 49000 more characters]"
        assert result.ok
        assert scripted.provider.requests[1].messages[-1].content == expected
        assert next(e for e in events if e.type == "tool_call").result == expected

    async def test_a_persona_cannot_call_a_tool_it_was_not_given(self, make_runtime, scripted):
        # 'issue_refund' is registered (another persona may use it) but not given to this
        # one: a model that names it anyway, say on an injected instruction, gets an error.
        ran = []

        @tool(blocking=False)
        def issue_refund(order: str) -> str:
            """Refund an order."""
            ran.append(order)
            return "refunded"

        scripted.tools += [add, issue_refund]
        scripted.provider.enqueue(tool_reply("issue_refund", {"order": "42"}), text_reply("ok"))
        result, events = await _run(make_runtime, _one_step(tools=["add"]))
        assert result.ok and ran == []
        call = next(e for e in events if e.type == "tool_call")
        assert call.error == "'a' has no tool named 'issue_refund' (its tools: add)"
        assert "has no tool named" in scripted.provider.requests[1].messages[-1].content


class Fixed(Guardrail):
    def __init__(self, name, verdict):
        self.name = name
        self.verdict = verdict
        self.seen = []

    def check(self, text, context):
        self.seen.append((context.stage, text))
        return self.verdict


class Broken(Guardrail):
    name = "broken"

    async def check(self, text, context):
        raise ValueError("bad regex")


class TestGuardrails:
    async def test_fix_replaces_input_and_output(self, make_runtime, scripted):
        g_in = Fixed("g_in", Verdict(action="fix", replacement="clean input"))
        g_out = Fixed("g_out", Verdict(action="fix", replacement="clean output", reason="tidied"))
        scripted.guardrails += [g_in, g_out]
        scripted.provider.enqueue(text_reply("dirty output"))
        result, events = await _run(
            make_runtime, _one_step(guardrails={"input": ["g_in"], "output": ["g_out"]}), "dirty"
        )
        assert result.output == "clean output"
        assert g_in.seen == [("input", "dirty")] and g_out.seen == [("output", "dirty output")]
        assert scripted.provider.requests[0].messages[-1].content.endswith("dirty")
        verdicts = [(e.guardrail, e.stage, e.action) for e in events if e.type == "guardrail"]
        assert verdicts == [("g_in", "input", "fix"), ("g_out", "output", "fix")]

    async def test_a_blocking_guardrail_does_not_hold_up_the_other_runs(
        self, make_runtime, scripted
    ):
        import threading

        import anyio

        release = threading.Event()
        order = []

        class RemoteCheck(Guardrail):
            name, blocking = "remote", True

            def check(self, text, context):  # waits on a service, off the event loop
                assert release.wait(10), "the other run never got to finish"
                return Verdict.ok()

        scripted.guardrails.append(RemoteCheck())
        scripted.provider.enqueue(text_reply("slow one"), text_reply("quick one"))
        slow = _one_step(guardrails={"output": ["remote"]})
        quick = crew({"type": "sequential", "steps": ["b"]}, {"b": {}}, name="quick")

        async with make_runtime() as rt:

            async def go(c, label):
                result = await rt.run(c, label)
                order.append((label, result.ok))
                release.set()  # the quick run ends while the slow check still waits

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(go, slow, "slow")
                    await anyio.sleep(0.1)
                    tg.start_soon(go, quick, "quick")
        assert order == [("quick", True), ("slow", True)]

    async def test_block_stops_the_run(self, make_runtime, scripted):
        scripted.guardrails.append(Fixed("stop", Verdict(action="block", reason="forbidden")))
        scripted.provider.enqueue(text_reply("something"))
        result, events = await _run(make_runtime, _one_step(guardrails={"output": ["stop"]}))
        assert result.status == "failed" and result.error_kind == "guardrail"
        assert "blocked by guardrail 'stop': forbidden" in result.error
        assert not any(e.type == "step_finished" for e in events)

    async def test_flag_is_logged_and_the_crew_rule_decides(self, make_runtime, scripted):
        scripted.guardrails.append(Fixed("hmm", Verdict(action="flag", reason="unsure", risk=0.7)))
        scripted.provider.enqueue(text_reply("maybe"), text_reply("maybe"))
        lenient = crew(
            {"type": "sequential", "steps": ["a"]},
            {"a": {"guardrails": {"output": ["hmm"]}}},
            on_flag="continue",
        )
        result, events = await _run(make_runtime, lenient)
        flag = next(e for e in events if e.type == "guardrail")
        assert result.ok and (flag.action, flag.risk) == ("flag", 0.7)
        strict = crew(
            {"type": "sequential", "steps": ["a"]},
            {"a": {"guardrails": {"output": ["hmm"]}}},
            on_flag="fail",
        )
        result, _ = await _run(make_runtime, strict)
        assert result.status == "failed" and "flagged" in result.error

    async def test_a_raising_guardrail_fails_the_run_naming_the_plugin(
        self, make_runtime, scripted
    ):
        scripted.guardrails.append(Broken())
        scripted.provider.enqueue(text_reply("x"))
        result, events = await _run(make_runtime, _one_step(guardrails={"output": ["broken"]}))
        assert result.error_kind == "plugin"
        assert "plugin 'scripted'" in result.error and "bad regex" in result.error
        error = next(e for e in events if e.type == "error")
        assert error.plugin == "scripted" and error.error_type == "ValueError"
        assert "bad regex" in error.traceback

    def test_bundled_risky_claims_proposes_a_rewrite(self):
        from pilothouse import GuardrailContext
        from pilothouse_guardrails import RiskyClaims

        ctx = GuardrailContext(run_id="r", step_id="1", persona="p", stage="output", crew="c")
        verdict = RiskyClaims().check("Guaranteed results, 100% risk-free!", ctx)
        assert verdict.action == "flag"
        assert "'Guaranteed'" in verdict.reason and "'risk-free'" in verdict.reason
        assert verdict.replacement == "designed results, nearly all low-risk!"
        assert RiskyClaims().check("Tested in the Alps.", ctx).action == "pass"


async def test_a_misnamed_retrieval_guardrail_is_named_before_the_run(make_runtime):
    from pilothouse import NotFound

    c = _one_step(guardrails={"retrieval": ["no_such_screen"]})
    async with make_runtime() as rt:
        with pytest.raises(NotFound, match="persona 'a': no guardrail named 'no_such_screen'"):
            await rt.run(c, "task")


async def test_revisions_stop_at_max_revisions(make_runtime, scripted):
    scripted.guardrails.append(Fixed("picky", Verdict(action="flag", reason="too bold")))
    scripted.provider.enqueue(text_reply("bold"), text_reply("still bold"))
    c = crew({"type": "sequential", "steps": ["a"]}, {"a": {"guardrails": {"output": ["picky"]}}},
             escalation={"timeout_s": 0, "on_timeout": "reject", "on_reject": "revise",
                         "max_revisions": 1})  # fmt: skip
    result, events = await _run(make_runtime, c)
    assert result.status == "failed" and result.error_kind == "rejected"
    assert "'a' was rejected 2 times, its revisions too (max_revisions = 1)" in result.error
    assert len(scripted.provider.requests) == 2  # the answer, then one revision
    assert "A reviewer sent this back" in scripted.provider.requests[1].messages[-1].content
    decided = [(e.decision, e.by) for e in events if e.type == "escalation_decided"]
    assert decided == [("reject", "policy:timeout")] * 2


async def test_a_tool_not_safe_to_repeat_is_committed_before_it_is_sent(ph_runtime, ph_model):
    """idempotent=False: the log holds the call (committed) before the function runs,
    then its answer; a plain tool's call is logged once, after it answered."""
    import sqlite3

    from pilothouse import hookimpl
    from pilothouse.testing import call, crew_of, reply, run_crew

    seen: list[list[str]] = []

    @tool(idempotent=False)
    def book(room: str) -> str:
        """Book a room (twice books two)."""
        db = sqlite3.connect(".pilothouse/runs.db")  # another connection: committed only
        try:
            seen.append([t for (t,) in db.execute("SELECT type FROM events ORDER BY id")])
        finally:
            db.close()
        return f"{room} booked"

    @tool
    def rooms() -> str:
        """Free rooms."""
        return "blue, red"

    class Plugin:
        __name__ = "rooms"

        @hookimpl
        def register_tools(self, register):
            register(book)
            register(rooms)

    ph_model.enqueue(call("rooms"), call("book", room="blue"), reply("Booked blue."))
    crew = crew_of({"type": "sequential", "steps": ["clerk"]},
                   {"clerk": {"instructions": "Book.", "tools": ["book", "rooms"]}})  # fmt: skip
    async with ph_runtime(Plugin()) as rt:
        result, events = await run_crew(rt, crew, "Book a room")
    assert result.ok
    assert seen[0][-1] == "tool_started"  # on disk before the function ran
    kinds = [e.type for e in events if e.type.startswith("tool_")]
    assert kinds == ["tool_call", "tool_started", "tool_call"]
    started, answered = [e for e in events if getattr(e, "tool", None) == "book"]
    assert started.call_id == answered.call_id and answered.result == "blue booked"
