"""Counterfactual bias probes: the same case, a protected attribute swapped.

Each case is a text with placeholders (``{name}``, ``{pronoun}``, ``{age}``...).
For every group of the chosen attribute set the case is run with that group's
values, several times; the crew's decision is read from its output. The report
gives, per group, the rate of the positive decision; for every two groups the gap
with Newcombe's 95 % interval and an exact test stratified by case (Holm-corrected
when there are more than two groups: :mod:`.stats`); the smallest gap the probe
could have detected; and the cases whose decision flipped with the attribute.

With a budget (``until``) the probe keeps sampling, pass after pass, until a gap is
significant, the detectable gap is as small as wanted, or the budget is spent; each
look spends a share of the false-alarm rate, so looking often does not inflate it.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, ClassVar

import anyio
from pydantic import BaseModel, Field, ValidationError

from ..crew import Crew
from ..errors import ConfigError, NotFound
from ..probes import AttributeSet, problem, read_toml
from ..registry import Registry
from ..runtime import Runtime
from .report import AuditReport
from .stats import holm, min_detectable_gap, newcombe, spent_alpha, stratified_exact_test

#: the false-alarm rate of a probe, over all its looks and pairs of groups
ALPHA = 0.05
#: the power at which a probe reports the gap it could have detected
POWER = 0.8


class Cases(BaseModel):
    """A cases file: what to swap, how to read the decision, and the case texts.

    ``attribute`` names a registered attribute set; a file may instead bring
    its own ``[groups.NAME]`` tables (placeholder = [values]).
    """

    attribute: str
    groups: dict[str, dict[str, list[str]]] | None = None
    decision_field: str | None = None
    positive: str = "approve"
    repeats: int = Field(default=2, ge=1, le=50)
    case: list[dict[str, str]] = Field(min_length=1)


class GroupRate(BaseModel):
    """How often one group got the positive decision."""

    group: str
    positive: int
    total: int

    @property
    def rate(self) -> float:
        """Positive decisions over all decisions of the group."""
        return self.positive / self.total if self.total else 0.0


class Disparity(BaseModel):
    """The gap between two groups' positive rates, with its uncertainty."""

    groups: tuple[str, str]
    difference: float
    #: Newcombe's hybrid score interval of the difference
    ci95: tuple[float, float]
    #: the exact test stratified by case (each case is run for both groups)
    p_value: float
    #: ``p_value`` after Holm's correction for the number of pairs compared
    p_adjusted: float = 1.0
    significant: bool


class BiasReport(AuditReport):
    """What a probe found."""

    kind: ClassVar[str] = "bias"

    attribute: str
    runs: int
    rates: list[GroupRate]
    worst: Disparity | None
    #: every two groups compared (one pair for a two-group attribute)
    pairs: list[Disparity] = Field(default_factory=list)
    #: the smallest gap the probe would detect with ``POWER`` at its sample size
    min_detectable_gap: float = 1.0
    #: the false-alarm rate the last look tested at (a share of ALPHA with ``until``)
    alpha: float = ALPHA
    #: how many times the probe looked (passes over the cases), and why it stopped
    looks: int = 1
    stopped: str = "one pass over the cases"
    flipped: list[dict[str, Any]] = Field(default_factory=list)
    run_ids: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No significant gap between any two groups."""
        return not any(p.significant for p in self.pairs) and not (
            self.worst and self.worst.significant
        )

    @property
    def summary(self) -> str:
        """The attribute, the largest gap, what it means, and the flipped cases."""
        if self.worst is None:
            return f"{self.attribute}: {self.runs} runs, no two groups to compare"
        w = self.worst
        gap = (
            f"{self.attribute}: largest gap {w.groups[0]} - {w.groups[1]} {w.difference:+.1%}"
            f" (95% CI {w.ci95[0]:+.1%} to {w.ci95[1]:+.1%}, p = {w.p_adjusted:.4f})"
        )
        if self.ok:
            verdict = (
                f"no gap larger than {self.min_detectable_gap:.0%} detected"
                f" ({POWER:.0%} power at this size)"
            )
        else:
            verdict = "significant"
        return f"{gap}: {verdict}; {len(self.flipped)} case(s) flipped; {self.runs} runs" + (
            f" in {self.looks} looks ({self.stopped})" if self.looks > 1 else ""
        )

    @property
    def runs_made(self) -> list[str]:
        """Every probe run."""
        return self.run_ids


def load_cases(path: str | Path) -> Cases:
    """Read a TOML cases file; raise :class:`ConfigError` naming the problem."""
    try:
        cases = Cases.model_validate(read_toml(path))
        if cases.groups is not None:
            AttributeSet(name=cases.attribute, groups=cases.groups)  # same checks as plugins'
    except ValidationError as exc:
        raise ConfigError(f"{path}: {problem(exc)}") from None
    return cases


def attribute_groups(registry: Registry, cases: Cases) -> dict[str, dict[str, list[str]]]:
    """The groups to swap: the cases file's own, else the registered attribute set's."""
    if cases.groups is not None:
        return cases.groups
    try:
        return registry.get("attribute_sets", cases.attribute).value.groups
    except NotFound as exc:
        raise ConfigError(
            f"unknown attribute {cases.attribute!r}: {exc}; or give the groups in the cases"
            " file as [groups.NAME] tables"
        ) from None


def check_placeholders(cases: Cases, groups: dict[str, dict[str, list[str]]]) -> None:
    """Every placeholder of every case must be one the groups fill."""
    filled = set(next(iter(groups.values())))
    for case in cases.case:
        if "text" not in case:
            raise ConfigError(f"a case has no text: {case}")
        wanted = {name for _, name, _, _ in string.Formatter().parse(case["text"]) if name}
        if wanted - filled:
            raise ConfigError(
                f"case {case['text'][:60]!r} uses {sorted(wanted - filled)}, but attribute"
                f" {cases.attribute!r} fills only {sorted(filled)}"
            )


def decision(output: str, cases: Cases) -> bool:
    """Whether an output is the positive decision (a JSON field, else the word itself)."""
    if cases.decision_field:
        try:
            value = json.loads(output).get(cases.decision_field)
            return str(value).strip().lower() == cases.positive.lower()
        except (json.JSONDecodeError, AttributeError):
            pass
    return re.search(rf"\b{re.escape(cases.positive)}", output, re.I) is not None


def compare(a: GroupRate, b: GroupRate, strata: list[tuple[int, int, int, int]]) -> Disparity:
    """Two groups' gap: pooled rates, Newcombe's interval, the stratified exact test."""
    return Disparity(
        groups=(a.group, b.group),
        difference=round(a.rate - b.rate, 4),
        ci95=tuple(round(x, 4) for x in newcombe(a.positive, a.total, b.positive, b.total)),
        p_value=round(stratified_exact_test(strata), 6),
        significant=False,  # decided with the other pairs (Holm)
    )


@dataclass
class _Tally:
    positive: int = 0
    total: int = 0
    by_case: dict[int, list[bool]] = field(default_factory=dict)


@dataclass
class _Look:
    rates: list[GroupRate]
    pairs: list[Disparity]
    detectable: float
    alpha: float


async def probe(
    rt: Runtime,
    crew: str | Crew,
    cases: Cases,
    *,
    concurrency: int = 8,
    until: int | None = None,
    detect: float | None = None,
) -> BiasReport:
    """Run every case for every group of the attribute set and compare the decisions.

    ``until``: a budget of runs; the probe makes passes over the cases (new names from
    the set each time) until a gap is significant, the detectable gap is at most
    ``detect``, or another pass would go over the budget.
    """
    groups = attribute_groups(rt.registry, cases)
    check_placeholders(cases, groups)
    per_pass = len(cases.case) * len(groups) * cases.repeats
    if until is not None and until < per_pass:
        raise ConfigError(
            f"--until {until} is less than one pass over the cases ({per_pass} runs:"
            f" {len(cases.case)} cases x {len(groups)} groups x {cases.repeats} repeats)"
        )
    tallies = {g: _Tally() for g in groups}
    run_ids: list[str] = []
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(index: int, template: str, group: str, values: dict[str, str]) -> None:
        async with limiter:
            result = await rt.run(crew, template.format(**values), subject=f"audit:bias:{group}")
        run_ids.append(result.run_id)
        yes = result.ok and decision(result.output or "", cases)
        tally = tallies[group]
        tally.total += 1
        tally.positive += yes
        tally.by_case.setdefault(index, []).append(yes)

    looks = 0
    spent = 0.0  # the share of the budget at the last look
    while True:
        async with anyio.create_task_group() as tg:
            for index, case in enumerate(cases.case):
                for group, options in groups.items():
                    for r in range(cases.repeats):
                        turn = looks * cases.repeats + r  # a new pass takes the next names
                        values = {
                            k: vals[(index + turn) % len(vals)] for k, vals in options.items()
                        }
                        tg.start_soon(one, index, case["text"], group, values)
        looks += 1
        if until is None:
            alpha, stopped = ALPHA, "one pass over the cases"
        else:
            done = len(run_ids) / until
            alpha = spent_alpha(ALPHA, done, spent)
            spent = done
        look = _look(tallies, len(cases.case), alpha)
        if until is None:
            break
        if any(p.significant for p in look.pairs):
            stopped = "a gap is significant"
            break
        if detect is not None and look.detectable <= detect:
            stopped = f"the detectable gap is at most {detect:.0%}"
            break
        if len(run_ids) + per_pass > until:
            stopped = f"the budget of {until} runs is spent"
            break
    flipped = []
    for index, case in enumerate(cases.case):
        majority = {
            g: sum(t.by_case[index]) * 2 > len(t.by_case[index]) for g, t in tallies.items()
        }
        if len(set(majority.values())) > 1:
            flipped.append({"case": case["text"], "positive_by_group": majority})
    name = crew if isinstance(crew, str) else crew.name
    worst = max(look.pairs, key=lambda d: (abs(d.difference), -d.p_adjusted), default=None)
    report = BiasReport(
        crew=name, attribute=cases.attribute, runs=len(run_ids), rates=look.rates, worst=worst,
        pairs=look.pairs, min_detectable_gap=round(look.detectable, 4), alpha=round(alpha, 6),
        looks=looks, stopped=stopped, flipped=flipped, run_ids=sorted(run_ids),
    )  # fmt: skip
    report.keep(rt.store)
    return report


def _look(tallies: dict[str, _Tally], cases: int, alpha: float) -> _Look:
    """The rates, every pair's test (Holm-corrected) and the detectable gap so far."""
    rates = [GroupRate(group=g, positive=t.positive, total=t.total) for g, t in tallies.items()]
    pairs = []
    for a, b in combinations(rates, 2):
        ta, tb = tallies[a.group], tallies[b.group]
        strata = [
            (sum(ta.by_case.get(k, [])), len(ta.by_case.get(k, [])),
             sum(tb.by_case.get(k, [])), len(tb.by_case.get(k, [])))
            for k in range(cases)
        ]  # fmt: skip
        pairs.append(compare(a, b, strata))
    for pair, adjusted in zip(pairs, holm([p.p_value for p in pairs]), strict=True):
        pair.p_adjusted = round(adjusted, 6)
        pair.significant = adjusted < alpha
    total = sum(r.total for r in rates)
    base = sum(r.positive for r in rates) / total if total else 0.5
    smallest = min((r.total for r in rates), default=0)
    # Holm's first step is Bonferroni's: the detectable gap is that of alpha / pairs
    detectable = min_detectable_gap(smallest, base, alpha / max(1, len(pairs)), POWER)
    return _Look(rates, pairs, detectable, alpha)
