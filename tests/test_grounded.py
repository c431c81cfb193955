"""Groundedness: planted unsupported claims are flagged, supported ones are not."""

from __future__ import annotations

import random

from conftest import crew, text_reply
from pilothouse import GuardrailContext, Passage, Retriever
from pilothouse_demo import HERE
from pilothouse_guardrails.grounded import Grounded, claims

CORPUS = [p.read_text() for p in sorted((HERE / "corpus").glob("*.md"))]
FACTS = [c for text in CORPUS for c in claims(text) if len(c.split()) >= 6]

# Claims written for the test: about the same product and market, not in the corpus.
PLANTED = [
    "The Helio 30 is waterproof down to fifty metres and floats.",
    "Every Helio 30 comes with a lifetime battery replacement plan.",
    "The solar panel produces 45 watts in moonlight.",
    "Northwind Gear was founded in 1887 by a sea captain in Lisbon.",
    "Teenagers under 16 are the largest group of buyers in Asia.",
    "The backpack weighs 300 grams and folds into a pocket.",
    "Retailers are paid a bonus for every unit returned by customers.",
    "The battery charges a laptop ten times from empty.",
    "Competitors sell integrated panels for 19 euros.",
    "Video reviews are banned in the outdoor market since 2024.",
]


def _context(evidence):
    return GuardrailContext(run_id="r", step_id="1", persona="p", stage="output", crew="c",
                            evidence=evidence)  # fmt: skip


def test_supported_claims_pass_and_planted_ones_are_flagged():
    g = Grounded()
    good = "The Helio 30 weighs 1.4 kg. [helio#1]\n- Solar accessories grew 14 percent in 2025."
    verdict = g.check(good, _context(CORPUS))
    assert verdict.action == "pass"
    assert [c["supported"] for c in verdict.details["claims"]] == [True, True]
    bad = good + "\n- The Helio 30 is waterproof down to fifty metres and floats."
    verdict = g.check(bad, _context(CORPUS))
    assert verdict.action == "flag" and "1 of 3 claims lack support" in verdict.reason
    assert "waterproof" in verdict.reason and verdict.risk == 0.333
    supported = [c for c in verdict.details["claims"] if c["supported"]]
    assert supported[0]["evidence"].startswith("The Helio 30 weighs 1.4 kg")
    wrong_number = g.check("Solar accessories grew 41 percent in 2025.", _context(CORPUS))
    assert wrong_number.details["claims"][0]["support"] < 1.0


def test_detection_and_false_alarm_rates_over_seeds():
    """Outputs of 5 claims: clean ones reworded from the corpus, dirty ones with 2 planted."""
    g = Grounded()
    detected = false_alarms = trials = 0
    for seed in range(40):
        rng = random.Random(seed)
        # supported claims, lightly reworded: one word dropped, lower case
        clean = []
        for fact in rng.sample(FACTS, 5):
            words = fact.split()
            del words[rng.randrange(len(words))]
            clean.append(" ".join(words).lower())
        dirty = clean[:3] + rng.sample(PLANTED, 2)
        rng.shuffle(dirty)
        false_alarms += g.check("\n".join(clean), _context(CORPUS)).action == "flag"
        detected += g.check("\n".join(dirty), _context(CORPUS)).action == "flag"
        trials += 1
    print(
        f"\ngroundedness over {trials} seeds: detection {detected / trials:.0%},"
        f" false alarms {false_alarms / trials:.0%}"
    )
    assert detected / trials >= 0.95 and false_alarms / trials <= 0.05


def test_no_evidence_means_no_verdict_on_claims():
    verdict = Grounded().check("The sky is green today.", _context([]))
    assert verdict.action == "pass" and verdict.details["note"] == "the step had no evidence"


async def test_the_engine_hands_the_steps_evidence_to_the_guardrail(make_runtime, scripted):
    class Sheet(Retriever):
        name = "sheet"

        async def search(self, query, *, k=4):
            return [Passage(id="s1", text="The Helio 30 weighs 1.4 kg and costs 189 euros.",
                            source="sheet.md")]  # fmt: skip

    scripted.retrievers.append(Sheet())
    scripted.provider.enqueue(
        text_reply("The Helio 30 weighs 1.4 kg.\nIt is waterproof down to fifty metres and floats.")
    )
    c = crew({"type": "sequential", "steps": ["w"]},
             {"w": {"retrievers": ["sheet"], "guardrails": {"output": ["grounded"]}}},
             on_flag="continue")  # fmt: skip
    async with make_runtime() as rt:
        result = await rt.run(c, "Describe the Helio 30")
        verdict = next(e for e in rt.store.events(result.run_id) if e.type == "guardrail")
    assert verdict.action == "flag" and verdict.risk == 0.5
    scores = {c["claim"]: c["supported"] for c in verdict.details["claims"]}
    assert scores == {"The Helio 30 weighs 1.4 kg.": True,
                      "It is waterproof down to fifty metres and floats.": False}  # fmt: skip
