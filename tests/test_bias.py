"""Counterfactual bias probes: a planted bias is found, an unbiased crew is not flagged."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from conftest import crew, text_reply
from pilothouse.bias import ATTRIBUTE_SETS, Cases, GroupRate, probe, two_proportions
from pilothouse_demo import HERE

FEMALE = ATTRIBUTE_SETS["gender"]["female"]["name"]
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
    assert list((tmp_path / ".pilothouse" / "audits").glob("bias-loans-*.json"))
    runs = json.loads(subprocess.run([sys.executable, "-m", "pilothouse", "runs", "--json"],
                                     cwd=tmp_path, capture_output=True, text=True,
                                     timeout=60).stdout)  # fmt: skip
    assert len(runs) == 16 and {r["crew"] for r in runs} == {"loans"}
