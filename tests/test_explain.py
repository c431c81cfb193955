"""Explainability: the evidence behind a final output, ranked and stored in the log."""

from __future__ import annotations

from conftest import crew, text_reply, tool_reply
from pilothouse import Passage, Retriever, tool
from pilothouse.engine.evidence import rank_evidence


def test_ranking_follows_the_claims():
    evidence = [
        ("passage", "p1", "1", "The Helio 30 weighs 1.4 kg and ships in slate grey."),
        ("passage", "p2", "1", "Solar accessories grew 14 percent in 2025."),
        ("passage", "p2", "2", "Solar accessories grew 14 percent in 2025."),  # again, later
        ("tool", "weather", "1", "Oslo: sunny, 12 degrees."),
    ]
    ranked = rank_evidence(
        "The Helio 30 weighs 1.4 kg.\nIt ships in slate grey.\nSolar accessories grew 14 percent.",
        evidence,
    )
    assert [(a.ref, a.step_id) for a in ranked] == [("p1", "1"), ("p2", "1")]
    assert ranked[0].score > ranked[1].score and abs(sum(a.score for a in ranked) - 1) < 1e-3
    assert rank_evidence("Nothing related here at all.", evidence) == []


async def test_the_run_log_explains_its_final_output(make_runtime, scripted):
    class Notes(Retriever):
        name = "notes"

        async def search(self, query, *, k=4):
            return [
                Passage(id="n1", text="The launch is on 3 March in Oslo.", source="plan.md"),
                Passage(id="n2", text="Budget holders meet on Fridays.", source="misc.md"),
            ]

    @tool(blocking=False)
    def venue(city: str) -> str:
        """Find a venue."""
        return f"{city}: the Opera House roof terrace seats 300 guests."

    scripted.retrievers.append(Notes())
    scripted.tools.append(venue)
    scripted.provider.enqueue(
        tool_reply("venue", {"city": "Oslo"}),
        text_reply(
            "The launch is on 3 March in Oslo, on the Opera House roof terrace for 300 guests."
        ),
    )
    c = crew({"type": "sequential", "steps": ["planner"]},
             {"planner": {"retrievers": ["notes"], "tools": ["venue"]}})  # fmt: skip
    async with make_runtime() as rt:
        result = await rt.run(c, "Plan the launch")
        events = rt.store.events(result.run_id)
    explained = next(e for e in events if e.type == "output_explained")
    assert [e.type for e in events[-2:]] == ["output_explained", "run_finished"]
    refs = [(a.kind, a.ref) for a in explained.evidence]
    assert ("tool", "venue") in refs and ("passage", "n1") in refs
    assert ("passage", "n2") not in refs  # it backs nothing in the output
