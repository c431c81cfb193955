"""LLM-ops metrics from the run log: volume, outcomes, tokens, cost, latency, oversight.

Everything here is a read of the run store (the ``runs`` summary and the
``model_call`` / ``escalation_*`` events), so the CLI, the monitor and the
portal show the same numbers.
"""

from __future__ import annotations

import calendar
import json
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from .settings import Budget
from .store import AUDIT_SUBJECT

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
        for name in ("success_rate", "error_rate", "escalation_rate", "override_rate",
                     "tokens_per_success"):  # fmt: skip
            data[name] = getattr(self, name)
        return data


def budget_alerts(path: str | Path, budgets: dict[str, Budget]) -> list[str]:
    """Crews whose spend today (UTC) is over their daily budget, said in words."""
    if not budgets:
        return []
    start = calendar.timegm(time.strptime(time.strftime("%Y-%m-%d", time.gmtime()), "%Y-%m-%d"))
    alerts = []
    for m in compute(path, by="crew", since=start, audits=True):  # their spend is real
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
    path: str | Path,
    *,
    by: GroupBy = "crew",
    crew: str | None = None,
    since: float | None = None,
    audits: bool = False,
) -> list[Metrics]:
    """Metrics grouped ``by`` crew, persona, model or day, over runs created since ``since``.

    The runs audits make (subject ``audit:...``) are left out unless ``audits`` is set:
    a hundred blocked hostile inputs say nothing about how the fleet does its work."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        where, args = ["1 = 1"], []
        if crew:
            where.append("crew = ?")
            args.append(crew)
        if since is not None:
            where.append("created >= ?")
            args.append(since)
        if not audits:
            where.append("COALESCE(subject, '') NOT LIKE ?")
            args.append(f"{AUDIT_SUBJECT}%")
        runs = db.execute(
            f"SELECT id, crew, status, created FROM runs WHERE {' AND '.join(where)}", args
        ).fetchall()
        run_info = {r[0]: r for r in runs}
        groups: dict[str, Metrics] = {}
        latencies: dict[str, list[float]] = defaultdict(list)
        escalated: dict[str, set[str]] = defaultdict(set)

        def group_of(run_id: str, persona: str | None = None, model: str | None = None) -> str:
            _, crew_name, _, created = run_info[run_id]
            if by == "crew":
                return crew_name
            if by == "day":
                return time.strftime("%Y-%m-%d", time.gmtime(created))
            if by == "persona":
                return f"{crew_name}/{persona}" if persona else f"{crew_name}/-"
            return model or "-"

        def metrics(key: str) -> Metrics:
            return groups.setdefault(key, Metrics(group=key))

        if by in ("crew", "day"):
            for run_id, _, status, _ in runs:
                m = metrics(group_of(run_id))
                m.runs += 1
                if status in ("succeeded", "failed", "cancelled"):
                    setattr(m, status, getattr(m, status) + 1)
                else:
                    m.active += 1
        ids = list(run_info)
        personas: dict[tuple[str, str | None], str] = {}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk : chunk + 500]
            marks = ", ".join("?" * len(part))
            rows = db.execute(
                "SELECT run_id, step_id, type, data FROM events WHERE run_id IN"
                f" ({marks}) AND type IN ('step_started', 'model_call', 'escalation_raised',"
                " 'escalation_decided') ORDER BY id",
                part,
            ).fetchall()
            for run_id, step_id, kind, data in rows:
                event = json.loads(data)
                if kind == "step_started":
                    personas[(run_id, step_id)] = event["persona"]
                    continue
                persona = event.get("persona") or personas.get((run_id, step_id))
                key = group_of(run_id, persona, event.get("model"))
                if kind == "model_call":
                    m = metrics(key)
                    m.model_calls += 1
                    if event.get("error"):
                        m.model_errors += 1
                    usage = event.get("usage") or {}
                    m.input_tokens += usage.get("input_tokens", 0)
                    m.output_tokens += usage.get("output_tokens", 0)
                    m.cost_usd += event.get("cost_usd") or 0.0
                    latencies[key].append(event.get("latency_ms") or 0.0)
                elif kind == "escalation_raised" and by != "model":
                    m = metrics(key)
                    m.escalations += 1
                    escalated[key].add(run_id)
                elif kind == "escalation_decided" and by != "model":
                    if (event.get("by") or "").startswith("policy:"):
                        continue
                    m = metrics(key)
                    m.human_decisions += 1
                    if event.get("decision") in ("edit", "reject"):
                        m.human_overrides += 1
        for key, m in groups.items():
            m.latency_p50_ms = _percentile(latencies[key], 0.5)
            m.latency_p95_ms = _percentile(latencies[key], 0.95)
            m.runs_escalated = len(escalated[key])
            m.cost_usd = round(m.cost_usd, 6)
        return sorted(groups.values(), key=lambda m: m.group)
    finally:
        db.close()
