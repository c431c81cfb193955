"""The context window's order and budget: what goes in, what is dropped, and the record of both."""

from __future__ import annotations

from conftest import crew, text_reply
from pilothouse import Passage, Persona, Retriever
from pilothouse.engine.context import CUT_MARK, build_context
from pilothouse.store.base import MemoryItem


def _passages(n: int) -> list[tuple[str, Passage]]:
    return [("kb", Passage(id=f"p{i}", text=f"passage {i} " + "word " * 80, source=f"d{i}.md"))
            for i in range(n)]  # fmt: skip


def _memory(n: int) -> list[MemoryItem]:
    return [MemoryItem(id=f"m{i}", subject="ana", channel="email", fact=f"fact {i} " + "x " * 40,
                       run_id="r", created=float(i)) for i in range(n)]  # fmt: skip


def _persona(**extra) -> Persona:
    return Persona(name="writer", instructions="Write.", **extra)


def test_without_a_budget_everything_goes_in_in_the_documented_order():
    window = build_context(_persona(), task="t", step_input="t", passages=_passages(2),
                           memory=_memory(1), subject="ana")  # fmt: skip
    assert [p.kind for p in window.pieces] == [
        "instructions", "memory", "passage", "passage", "input"
    ]  # fmt: skip
    system = window.messages[0].content
    assert system.index("<memory>") < system.index("<passage") and not window.dropped
    flipped = build_context(_persona(context_order=["passages", "memory"]), task="t",
                            step_input="t", passages=_passages(1), memory=_memory(1),
                            subject="ana").messages[0].content  # fmt: skip
    assert flipped.index("<passage") < flipped.index("<memory>")


def test_without_provenance_the_same_messages_go_out_and_no_pieces_are_made():
    # (an engine with no store and no observer records nothing, so it skips them)
    args = dict(task="t", step_input="out", previous="a", passages=_passages(3),
                memory=_memory(2), subject="ana")  # fmt: skip
    full = build_context(_persona(context_budget=300), **args)
    bare = build_context(_persona(context_budget=300), provenance=False, **args)
    assert bare.messages == full.messages and full.pieces and not bare.pieces
    assert bare.dropped == full.dropped and full.dropped  # the budget still applies


def test_over_budget_the_lowest_ranked_passages_go_first_then_the_oldest_memory():
    full = build_context(_persona(), task="t", step_input="t", passages=_passages(3),
                         memory=_memory(2), subject="ana")  # fmt: skip
    budget = full.tokens - 10  # one passage too many
    window = build_context(_persona(context_budget=budget), task="t", step_input="t",
                           passages=_passages(3), memory=_memory(2), subject="ana")  # fmt: skip
    assert window.tokens <= budget
    assert [p.ref for p in window.dropped] == ["p2"]
    assert [p.ref for p in window.pieces if p.kind == "passage"] == ["p0", "p1"]
    tight = build_context(_persona(context_budget=40), task="t", step_input="t",
                          passages=_passages(3), memory=_memory(2), subject="ana")  # fmt: skip
    assert [p.ref for p in tight.dropped] == ["p2", "p1", "p0", "m0"]
    assert [p.ref for p in tight.pieces if p.kind == "memory"] == ["m1"]
    memory_first = build_context(
        _persona(context_budget=budget, context_drop=["memory", "passages"]), task="t",
        step_input="t", passages=_passages(3), memory=_memory(2), subject="ana",
    )  # fmt: skip
    assert [p.ref for p in memory_first.dropped] == ["m0"]


def test_the_previous_output_is_cut_last_and_says_so():
    long = "sentence " * 400
    window = build_context(_persona(context_budget=120), task="t", step_input=long,
                           previous="researcher", passages=_passages(1))  # fmt: skip
    assert [p.kind for p in window.dropped] == ["passage", "previous_output"]
    assert window.messages[1].content.endswith(CUT_MARK) and window.tokens <= 120 + 10


class Three(Retriever):
    name = "three"

    async def search(self, query, *, k=4):
        return [p for _, p in _passages(3)][:k]


async def test_the_context_event_records_what_was_dropped(make_runtime, scripted, workspace):
    scripted.retrievers.append(Three())
    scripted.provider.enqueue(text_reply("done"))
    writer = crew({"type": "sequential", "steps": ["writer"]},
                  {"writer": {"instructions": "Write.", "retrievers": ["three"],
                              "context_budget": 150}})  # fmt: skip
    async with make_runtime() as rt:
        result = await rt.run(writer, "go")
        built = next(e for e in rt.store.events(result.run_id) if e.type == "context_built")
    assert result.ok and built.tokens <= 150
    assert [p.ref for p in built.dropped] == ["p2", "p1"]
    assert [p.ref for p in built.pieces if p.kind == "passage"] == ["p0"]
