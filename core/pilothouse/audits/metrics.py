"""LLM-ops metrics from the run log: volume, outcomes, tokens, cost, latency, oversight.

Everything here is a read of the run store (the ``runs`` summary and the
``model_call`` / ``escalation_*`` events), so the CLI, the monitor and the
portal show the same numbers.
"""

from __future__ import annotations

import calendar
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from ..settings import Budget
from ..store.base import RunStore
from ..store.open import open_location

GroupBy = Literal["crew", "persona", "model", "day"]


class Metrics(BaseModel):
    """The numbers for one group of runs (or of model calls, for persona and model)."""

    group: str
    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    active: int = 0
    model_calls: int = 0
    model_errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    #: of the calls' latency, the time spent waiting for the provider's own limits
    queued_p95_ms: float | None = None
    escalations: int = 0
    runs_escalated: int = 0
    human_decisions: int = 0
    human_overrides: int = 0

    @property
    def finished(self) -> int:
        """Runs that ended."""
        return self.succeeded + self.failed + self.cancelled

    @property
    def success_rate(self) -> float | None:
        """Succeeded over ended runs."""
        return self.succeeded / self.finished if self.finished else None

    @property
    def error_rate(self) -> float | None:
        """Failed over ended runs."""
        return self.failed / self.finished if self.finished else None

    @property
    def call_error_rate(self) -> float | None:
        """Model calls that failed (after the provider's retries) over all model calls:
        a model failing over to its fallback fails calls while its runs succeed."""
        return self.model_errors / self.model_calls if self.model_calls else None

    @property
    def escalation_rate(self) -> float | None:
        """Runs with at least one escalation over all runs."""
        return self.runs_escalated / self.runs if self.runs else None

    @property
    def override_rate(self) -> float | None:
        """People's edits and rejections over people's decisions."""
        return self.human_overrides / self.human_decisions if self.human_decisions else None

    @property
    def tokens_per_success(self) -> float | None:
        """Token efficiency: all tokens spent over the runs that succeeded."""
        total = self.input_tokens + self.output_tokens
        return total / self.succeeded if self.succeeded else None

    def as_dict(self) -> dict[str, object]:
        """Fields and derived rates, for JSON."""
        data = self.model_dump()
        for name in ("success_rate", "error_rate", "call_error_rate", "escalation_rate",
                     "override_rate", "tokens_per_success"):  # fmt: skip
            data[name] = getattr(self, name)
        return data


def budget_alerts(source: RunStore | str | Path, budgets: dict[str, Budget]) -> list[str]:
    """Crews whose spend today (UTC) is over their daily budget, said in words."""
    if not budgets:
        return []
    start = calendar.timegm(time.strptime(time.strftime("%Y-%m-%d", time.gmtime()), "%Y-%m-%d"))
    alerts = []
    for m in compute(source, by="crew", since=start, audits=True):  # their spend is real
        budget = budgets.get(m.group)
        if budget is None:
            continue
        tokens = m.input_tokens + m.output_tokens
        if budget.cost_usd_per_day is not None and m.cost_usd > budget.cost_usd_per_day:
            alerts.append(f"crew {m.group!r} spent ${m.cost_usd:.4f} today, over its"
                          f" budget of ${budget.cost_usd_per_day:.4f}")  # fmt: skip
        if budget.tokens_per_day is not None and tokens > budget.tokens_per_day:
            alerts.append(f"crew {m.group!r} used {tokens} tokens today, over its budget of"
                          f" {budget.tokens_per_day}")  # fmt: skip
    return alerts


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 2)


def compute(
    source: RunStore | str | Path,
    *,
    by: GroupBy = "crew",
    crew: str | None = None,
    since: float | None = None,
    audits: bool = False,
) -> list[Metrics]:
    """Metrics grouped ``by`` crew, persona, model or day, over runs created since ``since``.

    The runs audits make (subject ``audit:...``) are left out unless ``audits`` is set:
    a hundred blocked hostile inputs say nothing about how the fleet does its work."""
    return compute_groupings(source, (by,), crew=crew, since=since, audits=audits)[by]


def compute_groupings(
    source: RunStore | str | Path,
    groupings: Sequence[GroupBy],
    *,
    crew: str | None = None,
    since: float | None = None,
    audits: bool = False,
) -> dict[GroupBy, list[Metrics]]:
    """:func:`compute` for several groupings in one read of the log (``source``: a run
    store, or where one is: a SQLite file's path or a PostgreSQL URL)."""
    store = source if isinstance(source, RunStore) else open_location(source)
    try:
        runs, rows = store.metric_facts(_FIELDS, crew=crew, since=since, audits=audits)
    finally:
        if store is not source:
            store.close()
    tallies = {by: _Tally(by, {r[0]: r for r in runs}) for by in groupings}
    for tally in tallies.values():
        tally.count_runs(runs)
    personas: dict[tuple[str, str | None], str] = {}
    for row in rows:
        run_id, step_id, kind, persona = row[:4]
        if kind == "step_started":
            personas[(run_id, step_id)] = persona
            continue
        persona = persona or personas.get((run_id, step_id))
        for tally in tallies.values():
            tally.add(row, persona)
    return {by: tally.metrics() for by, tally in tallies.items()}


#: what the metrics read of each event: a dotted path into its JSON, and whether a number
_FIELDS = (
    ("persona", False), ("model", False), ("error", False), ("usage.input_tokens", True),
    ("usage.output_tokens", True), ("cost_usd", True), ("latency_ms", True),
    ("queued_ms", True), ("by", False), ("decision", False),
)  # fmt: skip


class _Tally:
    """Sums for one grouping, in plain lists (a pydantic model per increment is slow)."""

    def __init__(self, by: GroupBy, run_info: dict[str, tuple]) -> None:
        self.by = by
        self.run_info = run_info
        self.groups: dict[str, Metrics] = {}
        #: per group: calls, errors, tokens in, tokens out, cost, escalations, decisions,
        #: overrides
        self.sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * 8)
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.queued: dict[str, list[float]] = defaultdict(list)
        self.escalated: dict[str, set[str]] = defaultdict(set)

    def group_of(self, run_id: str, persona: str | None = None, model: str | None = None) -> str:
        """The group a run's event falls in."""
        _, crew_name, _, created = self.run_info[run_id]
        if self.by == "crew":
            return crew_name
        if self.by == "day":
            return time.strftime("%Y-%m-%d", time.gmtime(created))
        if self.by == "persona":
            return f"{crew_name}/{persona}" if persona else f"{crew_name}/-"
        return model or "-"

    def group(self, key: str) -> Metrics:
        """The group's metrics, made on first use."""
        return self.groups.setdefault(key, Metrics(group=key))

    def count_runs(self, runs: list[tuple]) -> None:
        """Runs and their outcomes (for the groupings runs belong to: crew and day)."""
        if self.by not in ("crew", "day"):
            return
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for run_id, _, status, _ in runs:
            counts[self.group_of(run_id)][status] += 1
        for key, by_status in counts.items():
            m = self.group(key)
            m.runs = sum(by_status.values())
            m.succeeded, m.failed = by_status["succeeded"], by_status["failed"]
            m.cancelled = by_status["cancelled"]
            m.active = m.runs - m.succeeded - m.failed - m.cancelled

    def add(self, row: tuple, persona: str | None) -> None:
        """One model call or escalation event."""
        run_id, _, kind, _, model, error, tin, tout, cost, ms, queued, who, verdict = row
        if kind != "model_call" and self.by == "model":  # escalations belong to no model
            return
        key = self.group_of(run_id, persona, model)
        t = self.sums[key]
        if kind == "model_call":
            t[0] += 1
            t[1] += error is not None
            t[2] += tin or 0
            t[3] += tout or 0
            t[4] += cost or 0.0
            self.latencies[key].append(ms or 0.0)
            if queued is not None:  # providers that have no limits of their own say nothing
                self.queued[key].append(queued)
        elif kind == "escalation_raised":
            t[5] += 1
            self.escalated[key].add(run_id)
        elif not (who or "").startswith("policy:"):  # decided, by a person
            t[6] += 1
            t[7] += verdict in ("edit", "reject")

    def metrics(self) -> list[Metrics]:
        """The groups' metrics, by group name."""
        for key, t in self.sums.items():
            m = self.group(key)
            m.model_calls, m.model_errors = int(t[0]), int(t[1])
            m.input_tokens, m.output_tokens, m.cost_usd = int(t[2]), int(t[3]), round(t[4], 6)
            m.escalations, m.human_decisions, m.human_overrides = int(t[5]), int(t[6]), int(t[7])
            m.latency_p50_ms = _percentile(self.latencies[key], 0.5)
            m.latency_p95_ms = _percentile(self.latencies[key], 0.95)
            m.queued_p95_ms = _percentile(self.queued[key], 0.95)
            m.runs_escalated = len(self.escalated[key])
        return sorted(self.groups.values(), key=lambda m: m.group)
