"""Counterfactual bias probes: the same case, a protected attribute swapped.

Each case is a text with placeholders (``{name}``, ``{pronoun}``, ``{age}``...).
For every group of the chosen attribute set the case is run with that group's
values, several times; the crew's decision is read from its output. The report
gives, per group, the rate of the positive decision; the largest gap between two
groups with a 95 % confidence interval and a two-proportion z-test; and the
cases whose decision flipped with the attribute.
"""

from __future__ import annotations

import json
import math
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
    ci95: tuple[float, float]
    p_value: float
    significant: bool


class BiasReport(AuditReport):
    """What a probe found."""

    kind: ClassVar[str] = "bias"

    attribute: str
    runs: int
    rates: list[GroupRate]
    worst: Disparity | None
    flipped: list[dict[str, Any]] = Field(default_factory=list)
    run_ids: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No significant gap between any two groups."""
        return not (self.worst and self.worst.significant)

    @property
    def summary(self) -> str:
        """The attribute, the largest gap, its p-value and the flipped cases."""
        if self.worst is None:
            return f"{self.attribute}: {self.runs} runs, no two groups to compare"
        w = self.worst
        verdict = "significant" if w.significant else "not significant"
        return (
            f"{self.attribute}: largest gap {w.groups[0]} - {w.groups[1]} {w.difference:+.1%}"
            f" (95% CI {w.ci95[0]:+.1%} to {w.ci95[1]:+.1%}, p = {w.p_value:.4f}, {verdict});"
            f" {len(self.flipped)} case(s) flipped; {self.runs} runs"
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


def two_proportions(a: GroupRate, b: GroupRate, alpha: float = 0.05) -> Disparity:
    """Difference of rates with a Wald 95 % interval and a two-sided z-test."""
    p1, p2 = a.rate, b.rate
    diff = p1 - p2
    se = math.sqrt(p1 * (1 - p1) / a.total + p2 * (1 - p2) / b.total)
    pooled = (a.positive + b.positive) / (a.total + b.total)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / a.total + 1 / b.total))
    p_value = 1.0 if se0 == 0 else math.erfc(abs(diff) / se0 / math.sqrt(2))
    return Disparity(
        groups=(a.group, b.group),
        difference=round(diff, 4),
        ci95=(round(diff - 1.96 * se, 4), round(diff + 1.96 * se, 4)),
        p_value=round(p_value, 6),
        significant=p_value < alpha,
    )


@dataclass
class _Tally:
    positive: int = 0
    total: int = 0
    by_case: dict[int, list[bool]] = field(default_factory=dict)


async def probe(rt: Runtime, crew: str | Crew, cases: Cases, *, concurrency: int = 8) -> BiasReport:
    """Run every case for every group of the attribute set and compare the decisions."""
    groups = attribute_groups(rt.registry, cases)
    check_placeholders(cases, groups)
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

    async with anyio.create_task_group() as tg:
        for index, case in enumerate(cases.case):
            for group, options in groups.items():
                for r in range(cases.repeats):
                    values = {key: vals[(index + r) % len(vals)] for key, vals in options.items()}
                    tg.start_soon(one, index, case["text"], group, values)
    rates = [GroupRate(group=g, positive=t.positive, total=t.total) for g, t in tallies.items()]
    pairs = [two_proportions(a, b) for a, b in combinations(rates, 2)]
    worst = max(pairs, key=lambda d: abs(d.difference), default=None)
    flipped = []
    for index, case in enumerate(cases.case):
        majority = {
            g: sum(t.by_case[index]) * 2 > len(t.by_case[index]) for g, t in tallies.items()
        }
        if len(set(majority.values())) > 1:
            flipped.append({"case": case["text"], "positive_by_group": majority})
    name = crew if isinstance(crew, str) else crew.name
    report = BiasReport(crew=name, attribute=cases.attribute, runs=len(run_ids), rates=rates,
                        worst=worst, flipped=flipped, run_ids=sorted(run_ids))  # fmt: skip
    report.keep(rt.store)
    return report
