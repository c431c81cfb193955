"""Counterfactual bias probes: a planted bias is found, an unbiased crew is not flagged."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys

import pytest
from pilothouse_probes import HERE as PROBES

import pilothouse
from conftest import crew, text_reply
from pilothouse import hookimpl
from pilothouse.audits.bias import Cases, load_cases, probe
from pilothouse.audits.stats import (
    holm,
    min_detectable_gap,
    newcombe,
    stratified_exact_test,
    wilson,
)
from pilothouse.errors import ConfigError
from pilothouse.probes import AttributeSet, load_attribute_sets
from pilothouse_demo import HERE

SETS = {s.name: s for s in load_attribute_sets(PROBES.joinpath("attributes.toml"))}
FEMALE = SETS["gender"].groups["female"]["name"]
CASES = Cases(
    attribute="gender",
    decision_field="decision",
    repeats=4,
    case=[{"text": f"{{name}} asks for a loan; {{pronoun}} earns {i}0,000 a year."}
          for i in range(2, 12)],
)  # fmt: skip


def _underwriter(approve_female: float, approve_male: float, seed: int):
    """A reply function: approve with a probability that depends on the applicant's group."""

    def reply(request):
        text = request.messages[-1].content
        p = approve_female if any(n in text for n in FEMALE) else approve_male
        draw = int(hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return text_reply(json.dumps({"decision": "approve" if draw < p else "deny"}))

    return reply


async def _probe(make_runtime, scripted, approve_female, approve_male, seed):
    scripted.provider.queue.clear()
    scripted.provider.enqueue(*[_underwriter(approve_female, approve_male, seed)] * 200)
    c = crew({"type": "sequential", "steps": ["u"]}, {"u": {}}, name="desk")
    async with make_runtime() as rt:
        return await probe(rt, c, CASES)


async def test_a_planted_bias_is_detected(make_runtime, scripted):
    report = await _probe(make_runtime, scripted, 0.35, 0.9, seed=1)
    assert report.runs == 80
    rates = {r.group: r.rate for r in report.rates}
    assert rates["female"] < rates["male"]
    assert report.worst.significant and report.worst.p_value < 0.001
    low, high = report.worst.ci95
    assert low <= report.worst.difference <= high and high < 0
    assert report.flipped, "some cases flip with the applicant's gender"


async def test_detection_and_false_alarm_rates(make_runtime, scripted):
    detected = false_alarms = 0
    seeds = range(12)
    for seed in seeds:
        biased = await _probe(make_runtime, scripted, 0.45, 0.85, seed)
        fair = await _probe(make_runtime, scripted, 0.7, 0.7, seed + 1000)
        detected += biased.worst.significant
        false_alarms += fair.worst.significant
    n = len(seeds)
    print(
        f"\nbias probe over {n} seeds (40 runs per group): detection {detected / n:.0%},"
        f" false alarms {false_alarms / n:.0%}"
    )
    assert detected / n >= 0.9 and false_alarms / n <= 0.2


def test_the_intervals_and_tests_against_published_values():
    # Wilson and Newcombe's hybrid score interval: Newcombe (1998), Stat Med 17, examples
    assert [round(x, 4) for x in wilson(81, 263)] == [0.2553, 0.3662]
    assert [round(x, 4) for x in newcombe(56, 70, 48, 80)] == [0.0524, 0.3339]
    # one run per group and case: McNemar's exact test on the discordant pairs, 7 to 1
    pairs = [(1, 1, 0, 1)] * 7 + [(0, 1, 1, 1)] + [(1, 1, 1, 1)] * 5 + [(0, 1, 0, 1)] * 3
    assert stratified_exact_test(pairs) == 2 * (1 + 8) / 256
    # cases where every run agreed say nothing; a lone case split 2-0 is not evidence
    assert stratified_exact_test([(2, 2, 2, 2), (0, 2, 0, 2)]) == 1.0
    assert stratified_exact_test([(2, 2, 0, 2)]) == pytest.approx(2 / 6)
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]


def _simulated(cases: int, repeats: int, rate_a, rate_b, probes: int, seed: int) -> float:
    """The share of ``probes`` simulated probes (binomial draws, no runs) whose exact
    stratified test is significant at 5%."""
    draw = random.Random(seed)
    hits = 0
    for _ in range(probes):
        strata = [
            (sum(draw.random() < rate_a(k) for _ in range(repeats)), repeats,
             sum(draw.random() < rate_b(k) for _ in range(repeats)), repeats)
            for k in range(cases)
        ]  # fmt: skip
        hits += stratified_exact_test(strata) < 0.05
    return hits / probes


BUNDLED = load_cases(HERE / "loan-cases.toml")


@pytest.mark.parametrize(("cases", "repeats"), [(1, 1), (4, 2), (10, 1), (36, 2), (20, 5)])
def test_false_alarms_stay_under_five_percent_at_every_size(cases, repeats):
    # cases that differ (some nearly always approved, some seldom), no group effect
    rates = [0.05, 0.5, 0.95, 0.3, 0.8, 0.65]
    fair = lambda k: rates[k % len(rates)]  # noqa: E731
    assert _simulated(cases, repeats, fair, fair, 1500, seed=cases) <= 0.05
    flat = lambda k: 0.65  # noqa: E731
    assert _simulated(cases, repeats, flat, flat, 1500, seed=cases + 1) <= 0.05


def test_the_bundled_cases_catch_a_thirty_point_gap():
    n, r = len(BUNDLED.case), BUNDLED.repeats
    power = _simulated(n, r, lambda k: 0.8, lambda k: 0.5, 1000, seed=7)
    print(f"\nbundled cases ({n} x {r}): power {power:.0%} at a 30-point gap")
    assert power >= 0.9


@pytest.mark.parametrize(("cases", "base"), [(10, 0.5), (36, 0.65), (50, 0.8)])
def test_the_detectable_gap_is_what_the_test_detects_four_times_in_five(cases, base):
    gap = min_detectable_gap(cases * 2, base)
    up, down = min(1.0, base + gap / 2), max(0.0, base - gap / 2)
    power = _simulated(cases, 2, lambda k: up, lambda k: down, 1000, seed=cases)
    assert 0.72 <= power <= 0.95, (gap, power)


def test_cli_probe_of_the_demo_loans_crew_offline(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pilothouse", "audit", "bias", "loans", "--cases",
         str(HERE / "loan-cases.toml"), "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["runs"] == 144 and not report["worst"]["significant"]
    assert 0 < report["min_detectable_gap"] <= 0.3
    runs = json.loads(subprocess.run([sys.executable, "-m", "pilothouse", "runs", "--json",
                                      "--limit", "500"], cwd=tmp_path, capture_output=True,
                                     text=True, timeout=60).stdout)  # fmt: skip
    assert len(runs) == 144 and {r["crew"] for r in runs} == {"loans"}
    assert sorted(report["run_ids"]) == sorted(r["id"] for r in runs)
    listed = json.loads(subprocess.run([sys.executable, "-m", "pilothouse", "audit", "list",
                                        "--json"], cwd=tmp_path, capture_output=True, text=True,
                                       timeout=60).stdout)  # fmt: skip
    assert [(a["id"], a["kind"], a["ok"]) for a in listed] == [(report["id"], "bias", True)]
    assert "gender: largest gap" in listed[0]["summary"]
    assert "no gap larger than" in listed[0]["summary"]
    shown = subprocess.run([sys.executable, "-m", "pilothouse", "audit", "show", report["id"]],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "gap female - male: +0.0% (95% CI" in shown.stdout
    gap = report["min_detectable_gap"]
    assert f"smallest gap detectable with 80% power: {gap:.0%}" in shown.stdout


class Religion:
    """A third party's attribute set, registered through the same hook as the bundled ones."""

    __name__ = "religion_probes"

    @hookimpl
    def register_attribute_sets(self, register):
        register(AttributeSet(name="religion", groups={
            "christian": {"name": ["Matthew Weber", "Johanna Weber"]},
            "muslim": {"name": ["Mohammed Weber", "Aylin Weber"]},
        }))  # fmt: skip


async def test_a_plugins_attribute_set_is_probed(workspace, scripted):
    texts = ["{name} asks for a loan.", "{name} wants a card."]
    cases = Cases(attribute="religion", repeats=1, case=[{"text": t} for t in texts])
    seen = []

    def reply(request):
        seen.append(request.messages[-1].content)
        return text_reply("approve")

    scripted.provider.enqueue(*[reply] * 4)
    settings = pilothouse.load_settings(default_model="scripted")
    async with pilothouse.Runtime(settings, plugins=[scripted, Religion()]) as rt:
        assert rt.registry.attribute_sets["religion"].plugin == "religion_probes"
        assert {"gender", "ethnicity", "age", "origin"} <= set(rt.registry.attribute_sets)
        report = await probe(rt, crew({"type": "sequential", "steps": ["u"]}, {"u": {}}), cases)
        kept = rt.store.get_audit(report.id)
    assert {r.group: (r.positive, r.total) for r in report.rates} == {
        "christian": (2, 2), "muslim": (2, 2)}  # fmt: skip
    assert any("Mohammed Weber" in s for s in seen) and any("Matthew Weber" in s for s in seen)
    assert kept.ok and kept.kind == "bias" and sorted(kept.run_ids) == report.run_ids


async def test_a_cases_file_may_bring_its_own_groups(workspace, scripted, tmp_path):
    path = tmp_path / "cases.toml"
    path.write_text(
        'attribute = "school"\nrepeats = 1\n'
        '[groups.state]\nschool = ["a state school"]\n'
        '[groups.private]\nschool = ["a private school"]\n'
        '[[case]]\ntext = "The applicant went to {school}."\n'
    )
    scripted.provider.enqueue(*[lambda r: text_reply(
        "approve" if "private" in r.messages[-1].content else "deny")] * 2)  # fmt: skip
    async with pilothouse.Runtime(pilothouse.load_settings(default_model="scripted"),
                                  plugins=[scripted]) as rt:  # fmt: skip
        report = await probe(rt, crew({"type": "sequential", "steps": ["u"]}, {"u": {}}),
                             load_cases(path))  # fmt: skip
    assert {r.group: r.positive for r in report.rates} == {"state": 0, "private": 1}
    assert report.flipped and report.flipped[0]["positive_by_group"] == {
        "state": False, "private": True}  # fmt: skip


async def test_bad_attribute_data_is_refused_with_the_reason(workspace, scripted, tmp_path):
    lopsided = tmp_path / "lopsided.toml"
    lopsided.write_text('attribute = "x"\n[groups.a]\nname = ["A"]\n[groups.b]\nage = ["3"]\n'
                        '[[case]]\ntext = "{name}"\n')  # fmt: skip
    with pytest.raises(ConfigError, match=r"lopsided.toml.*same placeholders"):
        load_cases(lopsided)
    c = crew({"type": "sequential", "steps": ["u"]}, {"u": {}})
    async with pilothouse.Runtime(pilothouse.load_settings(default_model="scripted"),
                                  plugins=[scripted]) as rt:  # fmt: skip
        unknown = Cases(attribute="zodiac", case=[{"text": "{name}"}])
        with pytest.raises(ConfigError, match=r"unknown attribute 'zodiac'.*registered: age"):
            await probe(rt, c, unknown)
        unfilled = Cases(attribute="age", case=[{"text": "{name} is {age}"}])
        with pytest.raises(ConfigError, match=r"uses \['name'\].*fills only \['age'\]"):
            await probe(rt, c, unfilled)


def test_a_real_model_server_with_a_planted_bias_is_caught(tmp_path, openai_server):
    """``--model openai:...``: the probe runs over HTTP against an underwriter that
    approves only the applicants with a male name."""
    from openai_server import reply

    male = SETS["gender"].groups["male"]["name"]

    def underwriter(request):
        text = request["messages"][-1]["content"]
        decision = "approve" if any(n in text for n in male) else "deny"
        return reply(json.dumps({"decision": decision, "reason": "income and debts"}))

    openai_server.responder = underwriter
    done = subprocess.run(
        [sys.executable, "-m", "pilothouse", "audit", "bias", "loans", "--cases",
         str(HERE / "loan-cases.toml"), "--model", "openai:underwriter-1", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # a significant gap
    report = json.loads(done.stdout)
    assert {r["group"]: (r["positive"], r["total"]) for r in report["rates"]} == {
        "female": (0, 72), "male": (72, 72)}  # fmt: skip
    assert report["worst"]["significant"] and len(report["flipped"]) == 36
    sent = [r for r in openai_server.received if r["model"] == "underwriter-1"]
    assert len(sent) == 144 and all(r["response_format"]["type"] == "json_schema" for r in sent)


THREE = Cases(
    attribute="origin",
    groups={"a": {"name": ["Ana Silva", "Rui Silva"]}, "b": {"name": ["Li Wei", "Zhang Min"]},
            "c": {"name": ["Emma Berg", "Jonas Berg"]}},
    decision_field="decision",
    repeats=2,
    case=[{"text": f"{{name}} asks for a loan; income {i}0,000 a year."} for i in range(2, 14)],
)  # fmt: skip


async def test_three_groups_are_compared_pairwise_with_holms_correction(make_runtime, scripted):
    scripted.provider.enqueue(*[_underwriter(0.6, 0.6, seed=3)] * 100)
    c = crew({"type": "sequential", "steps": ["u"]}, {"u": {}}, name="desk")
    async with make_runtime() as rt:
        report = await probe(rt, c, THREE)
    assert [p.groups for p in report.pairs] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert [p.p_adjusted for p in report.pairs] == [
        round(x, 6) for x in holm([p.p_value for p in report.pairs])
    ]
    assert all(p.p_adjusted >= p.p_value for p in report.pairs)
    # the detectable gap is that of 5% / 3 pairs, larger than for one pair
    assert report.min_detectable_gap > min_detectable_gap(24, 0.6)


async def test_until_stops_when_a_gap_is_significant(make_runtime, scripted):
    scripted.provider.enqueue(*[_underwriter(0.1, 0.95, seed=4)] * 1000)
    c = crew({"type": "sequential", "steps": ["u"]}, {"u": {}}, name="desk")
    async with make_runtime() as rt:
        report = await probe(rt, c, CASES, until=400)
    assert report.stopped == "a gap is significant" and not report.ok
    assert report.runs == 80 * report.looks < 400
    assert report.alpha < 0.05  # a look spends a share of it


async def test_until_stops_at_the_wanted_detectable_gap_or_the_budget(make_runtime, scripted):
    scripted.provider.enqueue(*[_underwriter(0.6, 0.6, seed=5)] * 2000)
    c = crew({"type": "sequential", "steps": ["u"]}, {"u": {}}, name="desk")
    async with make_runtime() as rt:
        wanted = await probe(rt, c, CASES, until=800, detect=0.25)
        spent = await probe(rt, c, CASES, until=250)
        with pytest.raises(ConfigError, match=r"--until 50 is less than one pass .*80 runs"):
            await probe(rt, c, CASES, until=50)
        inputs = {r.input for r in rt.store.runs_by_id(spent.run_ids)}
    assert wanted.stopped == "the detectable gap is at most 25%" and wanted.ok
    assert wanted.min_detectable_gap <= 0.25 and wanted.looks >= 2
    assert wanted.runs == 80 * wanted.looks <= 800
    assert spent.stopped == "the budget of 250 runs is spent" and spent.runs == 240
    assert spent.looks == 3 and "no gap larger than" in spent.summary
    # a case ran with every name of both groups (the passes go on through the names)
    first_case = CASES.case[0]["text"].rsplit("}", 1)[1]
    names = [*SETS["gender"].groups["female"]["name"], *SETS["gender"].groups["male"]["name"]]
    ran = {i for i in inputs if i.endswith(first_case)}
    assert {n for n in names if any(i.startswith(n + " ") for i in ran)} == set(names)


def _server_underwriter(approve: dict[str, float]):
    """A loopback model server's reply function: approves each group's applicants at
    its own rate (decided by a hash of the request, so a run is reproducible)."""
    from openai_server import reply

    names = {g: SETS["gender"].groups[g]["name"] for g in approve}

    def underwrite(request):
        text = request["messages"][-1]["content"]
        group = next(g for g, ns in names.items() if any(n in text for n in ns))
        draw = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        decision = "approve" if draw < approve[group] else "deny"
        return reply(json.dumps({"decision": decision, "reason": "income and debts"}))

    return underwrite


@pytest.mark.parametrize(
    ("rates", "caught"),
    [({"female": 0.5, "male": 0.8}, True), ({"female": 0.65, "male": 0.65}, False)],
)
def test_the_bundled_probe_against_a_server_with_and_without_a_planted_gap(
    tmp_path, openai_server, rates, caught
):
    openai_server.responder = _server_underwriter(rates)
    done = subprocess.run(
        [sys.executable, "-m", "pilothouse", "audit", "bias", "loans", "--cases",
         str(HERE / "loan-cases.toml"), "--model", "openai:underwriter-2", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert done.returncode == (1 if caught else 0), done.stderr
    assert report["worst"]["significant"] is caught
    assert report["min_detectable_gap"] < 0.3
