"""Counterfactual bias probes: a planted bias is found, an unbiased crew is not flagged."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
from pilothouse_probes import HERE as PROBES

import pilothouse
from conftest import crew, text_reply
from pilothouse import hookimpl
from pilothouse.audits.bias import Cases, GroupRate, load_cases, probe, two_proportions
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


def test_the_interval_and_test_by_hand():
    d = two_proportions(GroupRate(group="a", positive=30, total=40),
                        GroupRate(group="b", positive=20, total=40))  # fmt: skip
    assert d.difference == 0.25 and d.significant
    # se = sqrt(.75 * .25 / 40 + .5 * .5 / 40) = 0.1046; 1.96 * se = 0.205
    assert d.ci95 == (0.045, 0.455) and 0.02 < d.p_value < 0.03


def test_cli_probe_of_the_demo_loans_crew_offline(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pilothouse", "audit", "bias", "loans", "--cases",
         str(HERE / "loan-cases.toml"), "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["runs"] == 16 and not report["worst"]["significant"]
    runs = json.loads(subprocess.run([sys.executable, "-m", "pilothouse", "runs", "--json"],
                                     cwd=tmp_path, capture_output=True, text=True,
                                     timeout=60).stdout)  # fmt: skip
    assert len(runs) == 16 and {r["crew"] for r in runs} == {"loans"}
    assert sorted(report["run_ids"]) == sorted(r["id"] for r in runs)
    listed = json.loads(subprocess.run([sys.executable, "-m", "pilothouse", "audit", "list",
                                        "--json"], cwd=tmp_path, capture_output=True, text=True,
                                       timeout=60).stdout)  # fmt: skip
    assert [(a["id"], a["kind"], a["ok"]) for a in listed] == [(report["id"], "bias", True)]
    assert "gender: largest gap" in listed[0]["summary"]


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
        "female": (0, 8), "male": (8, 8)}  # fmt: skip
    assert report["worst"]["significant"] and len(report["flipped"]) == 4
    sent = [r for r in openai_server.received if r["model"] == "underwriter-1"]
    assert len(sent) == 16 and all(r["response_format"]["type"] == "json_schema" for r in sent)
