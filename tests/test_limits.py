"""Every rule of engagement ends the run with its reason logged."""

from __future__ import annotations

import threading

import anyio
import pytest

from conftest import crew, text_reply, tool_reply
from pilothouse import Model, tool


async def _run(make_runtime, c, text="task", **settings):
    async with make_runtime(**settings) as rt:
        result = await rt.run(c, text)
        events = rt.store.events(result.run_id)
    return result, events


def _limit(events):
    hits = [e for e in events if e.type == "limit_hit"]
    assert len(hits) == 1, [e.type for e in events]
    assert events[-1].type == "run_failed" and events[-1].kind == "limit"
    return hits[0]


def _handoff_crew(**limits):
    return crew(
        {"type": "handoff", "start": "a", "routes": {"a": ["b"], "b": ["a"]}},
        {"a": {}, "b": {}},
        limits=limits,
    )


class TestCounters:
    async def test_max_steps(self, make_runtime, scripted):
        scripted.provider.enqueue(*[text_reply(f"out {i}") for i in range(5)])
        c = crew(
            {"type": "sequential", "steps": ["a", "b", "c"]},
            {n: {} for n in "abc"},
            limits={"max_steps": 2},
        )
        result, events = await _run(make_runtime, c)
        assert result.status == "failed" and result.error_kind == "limit"
        assert _limit(events).limit == "max_steps"
        assert len(scripted.provider.requests) == 2

    async def test_max_handoffs(self, make_runtime, scripted):
        scripted.provider.enqueue(
            *[tool_reply(f"transfer_to_{t}", {"message": f"m{i}"}) for i, t in enumerate("baba")]
        )
        _, events = await _run(make_runtime, _handoff_crew(max_handoffs=1, max_ping_pong=5))
        assert _limit(events).limit == "max_handoffs"
        assert sum(e.type == "handoff" for e in events) == 1

    async def test_max_tool_rounds(self, make_runtime, scripted):
        @tool(blocking=False)
        def lookup(n: int) -> int:
            """Look something up."""
            return n

        scripted.tools.append(lookup)
        scripted.provider.enqueue(*[tool_reply("lookup", {"n": i}) for i in range(5)])
        c = crew(
            {"type": "sequential", "steps": ["a"]},
            {"a": {"tools": ["lookup"]}},
            limits={"max_tool_rounds": 3},
        )
        _, events = await _run(make_runtime, c)
        assert _limit(events).limit == "max_tool_rounds"
        assert sum(e.type == "tool_call" for e in events) == 3


class TestLoops:
    async def test_same_persona_same_input_again(self, make_runtime, scripted):
        # a -> b -> a with the same words (case and spacing aside) is a loop at once
        scripted.provider.enqueue(
            tool_reply("transfer_to_b", {"message": "Please  check"}),
            tool_reply("transfer_to_a", {"message": "task"}),
        )
        _, events = await _run(make_runtime, _handoff_crew(max_ping_pong=9), text="TASK")
        hit = _limit(events)
        assert hit.limit == "loop" and "'a' received the same input" in hit.message
        assert len(scripted.provider.requests) == 2  # the repeated step never called the model

    async def test_ping_pong_without_progress(self, make_runtime, scripted):
        scripted.provider.enqueue(
            *[
                tool_reply(f"transfer_to_{t}", {"message": f"try {i}"})
                for i, t in enumerate("bababab")
            ]
        )
        _, events = await _run(make_runtime, _handoff_crew(max_ping_pong=2, max_handoffs=20))
        hit = _limit(events)
        assert hit.limit == "loop" and "back and forth 2 times" in hit.message
        assert sum(e.type == "handoff" for e in events) == 4

    async def test_same_tool_same_arguments(self, make_runtime, scripted):
        calls = []

        @tool(blocking=False)
        def search(query: str) -> str:
            """Search."""
            calls.append(query)
            return "nothing"

        scripted.tools.append(search)
        scripted.provider.enqueue(*[tool_reply("search", {"query": "x"}) for _ in range(6)])
        c = crew(
            {"type": "sequential", "steps": ["a"]},
            {"a": {"tools": ["search"]}},
            limits={"max_identical_tool_calls": 3, "max_tool_rounds": 10},
        )
        _, events = await _run(make_runtime, c)
        hit = _limit(events)
        assert hit.limit == "loop" and "'search'" in hit.message
        assert calls == ["x", "x", "x"]  # the fourth identical call never ran


class TestBudgets:
    async def test_token_budget_refuses_the_call_before_it_is_made(self, make_runtime, scripted):
        scripted.provider.enqueue(text_reply("one", tokens=(300, 100)), text_reply("two"))
        c = crew(
            {"type": "sequential", "steps": ["a", "b"]},
            {"a": {"max_output_tokens": 100}, "b": {"max_output_tokens": 100}},
            limits={"max_tokens": 500},
        )
        _, events = await _run(make_runtime, c)
        hit = _limit(events)
        assert hit.limit == "max_tokens" and "it was not made" in hit.message
        assert len(scripted.provider.requests) == 1
        assert [e.type for e in events].count("model_call") == 1

    async def test_cost_budget(self, make_runtime, scripted):
        # the scripted model costs $0.001 a token
        scripted.provider.enqueue(text_reply("one", tokens=(200, 100)), text_reply("two"))
        c = crew(
            {"type": "sequential", "steps": ["a", "b"]},
            {"a": {"max_output_tokens": 50}, "b": {"max_output_tokens": 50}},
            limits={"max_cost_usd": 0.35},
        )
        result, events = await _run(make_runtime, c)
        assert _limit(events).limit == "max_cost_usd"
        assert result.cost_usd == pytest.approx(0.3)
        assert len(scripted.provider.requests) == 1

    async def test_timeout(self, make_runtime, scripted):
        class Sleepy(Model):
            provider, name = "scripted", "sleepy"

            async def complete(self, request):
                await anyio.sleep(10)

        scripted.provider.model = lambda name: Sleepy()
        c = crew({"type": "sequential", "steps": ["a"]}, {"a": {}}, limits={"timeout_s": 0.2})
        with anyio.fail_after(5):
            result, events = await _run(make_runtime, c)
        assert _limit(events).limit == "timeout_s"
        assert result.status == "failed"

    async def test_timeout_ends_a_run_stuck_in_a_blocking_tool(self, make_runtime, scripted):
        # A blocking tool runs in a worker thread, which nothing can stop: the run must
        # not wait for it (nor must a cancellation); the thread is left to finish alone.
        release = threading.Event()

        @tool
        def slow_lookup(n: int) -> int:
            """Look something up in a system that hangs."""
            release.wait(30)
            return n

        scripted.tools.append(slow_lookup)
        scripted.provider.enqueue(tool_reply("slow_lookup", {"n": 1}), text_reply("never"))
        c = crew({"type": "sequential", "steps": ["a"]}, {"a": {"tools": ["slow_lookup"]}},
                 limits={"timeout_s": 0.3})  # fmt: skip
        try:
            with anyio.fail_after(10):
                result, events = await _run(make_runtime, c)
        finally:
            release.set()
        assert _limit(events).limit == "timeout_s"
        assert result.status == "failed"
