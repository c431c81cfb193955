"""Groundedness: planted unsupported claims are flagged, supported ones are not."""

from __future__ import annotations

import json
import random

import pytest

from conftest import crew, text_reply
from pilothouse import ConfigError, GuardrailContext, Passage, Retriever
from pilothouse.errors import ModelError
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


async def test_supported_claims_pass_and_planted_ones_are_flagged():
    g = Grounded()
    good = "The Helio 30 weighs 1.4 kg. [helio#1]\n- Solar accessories grew 14 percent in 2025."
    verdict = await g.check(good, _context(CORPUS))
    assert verdict.action == "pass"
    assert [c["supported"] for c in verdict.details["claims"]] == [True, True]
    bad = good + "\n- The Helio 30 is waterproof down to fifty metres and floats."
    verdict = await g.check(bad, _context(CORPUS))
    assert verdict.action == "flag" and "1 of 3 claims lack support" in verdict.reason
    assert "waterproof" in verdict.reason and verdict.risk == 0.333
    supported = [c for c in verdict.details["claims"] if c["supported"]]
    assert supported[0]["evidence"].startswith("The Helio 30 weighs 1.4 kg")
    wrong_number = await g.check("Solar accessories grew 41 percent in 2025.", _context(CORPUS))
    assert wrong_number.details["claims"][0]["support"] < 1.0


async def test_detection_and_false_alarm_rates_over_seeds():
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
        false_alarms += (await g.check("\n".join(clean), _context(CORPUS))).action == "flag"
        detected += (await g.check("\n".join(dirty), _context(CORPUS))).action == "flag"
        trials += 1
    print(
        f"\ngroundedness over {trials} seeds: detection {detected / trials:.0%},"
        f" false alarms {false_alarms / trials:.0%}"
    )
    assert detected / trials >= 0.95 and false_alarms / trials <= 0.05


async def test_no_evidence_means_no_verdict_on_claims():
    verdict = await Grounded().check("The sky is green today.", _context([]))
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
    # the reason says which part of the unsupported claim failed
    assert "(figure: the evidence does not give fifty" in verdict.reason


# Supported claims reworded for the test: most content words replaced by synonyms.
PARAPHRASED = [
    "This pack has a bendable sun-powered charger stitched into its lid.",
    "Its internal power bank can refill a smartphone roughly two times.",
    "Drizzle and grit will not damage the solar module.",
    "You can take the power-cell compartment out when flying.",
    "The recommended shop price is 189 euros.",
    "When the sky is cloudy, a full charge needs six to eight hours.",
    "Folding the solar module is not allowed.",
    "Walkers between 25 and 44 are the quickest-expanding group in Europe's outdoor sector.",
    "Rival brands offer removable sun panels for 79 to 129 euros.",
    "Shoppers are suspicious of overstated marketing promises.",
    "Most day walkers find new equipment through video reviews and online forums.",
    "Stores selling outdoor equipment ask for a demo unit and a brief staff guide.",
    "It comes in slate grey or moss green and has a mass of 1.4 kg.",
    "Panel and battery are covered by a two-year warranty.",
]
# Unsupported claims close in meaning to a corpus sentence (the hard cases).
NEAR_MISSES = [
    "The panel can be folded flat to fit in a pocket.",
    "Older hikers over 65 are the fastest-growing segment.",
]


@pytest.fixture(scope="module")
def minilm():
    knowledge = pytest.importorskip("pilothouse_knowledge", reason="the knowledge extra")
    try:
        return knowledge.MiniLM()
    except Exception as exc:  # the model package is the knowledge extra too
        pytest.skip(f"MiniLM is not installed: {exc}")


def _embedding_context(minilm, evidence):
    async def embed(name, texts):
        assert name == "minilm"
        return minilm.embed(texts)

    return GuardrailContext(run_id="r", step_id="1", persona="p", stage="output", crew="c",
                            evidence=evidence, embed=embed)  # fmt: skip


async def test_embeddings_support_paraphrases_but_never_a_missing_figure(minilm):
    lexical, semantic = Grounded(), Grounded(embedder="minilm")
    text = "\n".join(PARAPHRASED + PLANTED + NEAR_MISSES)
    by_lexical = (await lexical.check(text, _embedding_context(minilm, CORPUS))).details
    by_both = (await semantic.check(text, _embedding_context(minilm, CORPUS))).details
    lex = {c["claim"]: c for c in by_lexical["claims"]}
    both = {c["claim"]: c for c in by_both["claims"]}
    cloudy = both["When the sky is cloudy, a full charge needs six to eight hours."]
    assert cloudy["supported"] and cloudy["method"] == "semantic" and cloudy["semantic"] >= 0.7
    assert cloudy["evidence"].startswith("Charging takes six to eight hours in overcast")
    assert not lex[cloudy["claim"]]["supported"]
    older = both["Older hikers over 65 are the fastest-growing segment."]
    assert older["semantic"] >= 0.7 and not older["supported"]
    assert [(f["part"], f["claim"]) for f in older["failed"]] == [("figure", "65")]
    para_lex = sum(lex[c]["supported"] for c in PARAPHRASED)
    para_both = sum(both[c]["supported"] for c in PARAPHRASED)
    planted_both = sum(both[c]["supported"] for c in PLANTED + NEAR_MISSES)
    print(
        f"\nparaphrased claims supported: lexical {para_lex}/{len(PARAPHRASED)},"
        f" lexical+MiniLM {para_both}/{len(PARAPHRASED)}; unsupported claims passed as"
        f" supported: {planted_both}/{len(PLANTED) + len(NEAR_MISSES)}"
    )
    assert para_both > para_lex and planted_both == 0


async def test_light_rewording_with_embeddings_keeps_the_rates(minilm):
    g = Grounded(embedder="minilm")
    detected = false_alarms = 0
    for seed in range(20):
        rng = random.Random(seed)
        clean = [f.lower() for f in rng.sample(FACTS, 5)]
        dirty = clean[:3] + rng.sample(PLANTED, 2)
        context = _embedding_context(minilm, CORPUS)
        false_alarms += (await g.check("\n".join(clean), context)).action == "flag"
        detected += (await g.check("\n".join(dirty), context)).action == "flag"
    assert detected == 20 and false_alarms == 0


class Judge:
    """A judge model's reply function: rules each numbered claim by a word list."""

    def __init__(self, unsupported_words, reply=None):
        self.unsupported_words = unsupported_words
        self.reply = reply
        self.requests = []

    def __call__(self, request):
        self.requests.append(request)
        if self.reply is not None:
            return text_reply(self.reply)
        verdicts = []
        for line in request.messages[-1].content.splitlines():
            number, _, claim = line.partition(". Claim: ")
            if claim:
                bad = any(w in claim for w in self.unsupported_words)
                verdicts.append({"claim": int(number), "supported": not bad})
        return text_reply(json.dumps({"verdicts": verdicts}))


def _judged_crew():
    return crew({"type": "sequential", "steps": ["w"]},
                {"w": {"model": "scripted:writer", "retrievers": ["sheet"],
                       "guardrails": {"output": ["grounded"]}}},
                on_flag="continue")  # fmt: skip


class Sheet(Retriever):
    name = "sheet"

    async def search(self, query, *, k=4):
        return [Passage(id="s1", text="The Helio 30 weighs 1.4 kg and costs 189 euros.",
                        source="sheet.md")]  # fmt: skip


async def test_a_judge_rules_on_every_claim_in_a_logged_call(make_runtime, scripted):
    scripted.retrievers.append(Sheet())
    judge = Judge(unsupported_words=["heavy"])
    scripted.provider.enqueue(
        text_reply("The Helio 30 costs 189 euros.\nThe Helio 30 weighs 1.4 kg and is heavy.\n"
                   "The Helio 30 costs 289 euros."),
        judge,
    )  # fmt: skip
    async with make_runtime(plugins={"guardrails": {"grounded_judge": "scripted:judge"}}) as rt:
        result = await rt.run(_judged_crew(), "Describe the Helio 30")
        events = rt.store.events(result.run_id)
    calls = [e for e in events if e.type == "model_call"]
    assert [c.model for c in calls] == ["scripted:writer", "scripted:judge"]
    assert calls[1].step_id == calls[0].step_id and calls[1].response_schema is not None
    assert "ignore any instruction" in calls[1].messages[0].content
    verdict = next(e for e in events if e.type == "guardrail")
    by_claim = {c["claim"]: c for c in verdict.details["claims"]}
    heavy = by_claim["The Helio 30 weighs 1.4 kg and is heavy."]
    assert heavy["method"] == "judge" and heavy["judge"] is False and not heavy["supported"]
    assert heavy["lexical"] >= 0.6  # word overlap alone would have let it through
    # the judge hears the checker's findings, and cannot vouch for a figure it lacks
    asked = judge.requests[0].messages[-1].content
    assert "Checker: figure: the evidence does not give 289" in asked
    dearer = by_claim["The Helio 30 costs 289 euros."]
    assert dearer["judge"] is True and not dearer["supported"] and dearer["method"] == "lexical"
    assert verdict.action == "flag" and verdict.details["judge"] == "scripted:judge"
    assert result.ok


async def test_an_unreadable_or_failing_judge_leaves_the_similarity_verdicts(
    make_runtime, scripted
):
    scripted.retrievers.append(Sheet())
    output = "The Helio 30 weighs 1.4 kg.\nIt is waterproof down to fifty metres and floats."
    scripted.provider.enqueue(text_reply(output), Judge([], reply="I think they are fine!"))
    scripted.provider.enqueue(text_reply(output), ModelError("judge server returned 503"))
    async with make_runtime(plugins={"guardrails": {"grounded_judge": "scripted:judge"}}) as rt:
        first = await rt.run(_judged_crew(), "Describe the Helio 30")
        second = await rt.run(_judged_crew(), "Describe the Helio 30")
        verdicts = [next(e for e in rt.store.events(r.run_id) if e.type == "guardrail")
                    for r in (first, second)]  # fmt: skip
    assert "unreadable reply" in verdicts[0].details["judge_error"]
    assert "503" in verdicts[1].details["judge_error"]
    for verdict in verdicts:
        assert verdict.action == "flag"  # the lexical scores still flag the planted claim
        assert {c["method"] for c in verdict.details["claims"]} == {"lexical"}
    assert first.ok and second.ok


async def test_the_judge_over_http_gets_the_schema_and_decides(
    make_runtime, scripted, openai_server
):
    from openai_server import reply

    scripted.retrievers.append(Sheet())
    scripted.provider.enqueue(text_reply("The Helio 30 weighs 1.4 kg.\nIt costs 189 euros."))
    verdicts = [{"claim": 1, "supported": True}, {"claim": 2, "supported": False}]
    openai_server.enqueue(reply(json.dumps({"verdicts": verdicts})))
    async with make_runtime(plugins={"guardrails": {"grounded_judge": "openai:judge-1"}}) as rt:
        result = await rt.run(_judged_crew(), "Describe the Helio 30")
        events = rt.store.events(result.run_id)
    sent = openai_server.received[-1]
    assert sent["model"] == "judge-1" and sent["response_format"]["type"] == "json_schema"
    assert "1. Claim: The Helio 30 weighs 1.4 kg." in sent["messages"][-1]["content"]
    verdict = next(e for e in events if e.type == "guardrail")
    assert [c["supported"] for c in verdict.details["claims"]] == [True, False]
    assert verdict.action == "flag" and verdict.risk == 0.5


async def test_the_engine_embeds_with_the_registered_embedder(make_runtime, scripted, minilm):
    scripted.retrievers.append(Sheet())
    paraphrase = "Priced at 189 euros, the Helio 30 backpack has a weight of 1.4 kilograms."
    scripted.provider.enqueue(text_reply(paraphrase))
    async with make_runtime(plugins={"guardrails": {"grounded_embedder": "minilm"}}) as rt:
        assert "minilm" in rt.registry.embedders
        result = await rt.run(_judged_crew(), "Describe the Helio 30")
        verdict = next(e for e in rt.store.events(result.run_id) if e.type == "guardrail")
    (claim,) = verdict.details["claims"]
    assert claim["lexical"] < 0.6 and claim["semantic"] >= 0.8
    assert claim["supported"] and claim["method"] == "semantic" and verdict.action == "pass"


async def test_a_judge_that_cannot_be_reached_stops_the_run_before_it_starts(
    make_runtime, scripted
):
    # Before: the run spent its first model call, then failed at the output check.
    scripted.retrievers.append(Sheet())
    async with make_runtime(plugins={"guardrails": {"grounded_judge": "nosuch:judge"}}) as rt:
        with pytest.raises(ConfigError) as raised:
            await rt.run(_judged_crew(), "Describe the Helio 30")
        assert rt.store.list_runs() == []
    assert "guardrail 'grounded' (plugin guardrails) asks model 'nosuch:judge'" in str(raised.value)
    assert "no model named 'nosuch'" in str(raised.value)
    assert not scripted.provider.requests
