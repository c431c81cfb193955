"""The overview pages, made from run digests: home, run index, escalations,
failures, crews and personas. Run pages are reached through these (they stay
out of the navigation, which every page of the site embeds)."""

from __future__ import annotations

import functools
import time
from collections import Counter, defaultdict
from collections.abc import Iterable

from ..audits.metrics import Metrics
from .charts import hbars, money, stacked_bars
from .digest import RunDigest
from .markdown import Redact, inline, link, table
from .paths import (
    crew_path,
    day_of,
    day_path,
    hour_of,
    hour_path,
    persona_path,
    rel,
    run_path,
)
from .run_page import step_anchor, undecided, when

#: runs listed on a crew's page and steps on a persona's (day and hour pages list them all);
#: these pages change with every new run, so they stay short
LATEST = 30
#: runs listed on the run index
INDEX_LATEST = 50
FINAL = ("succeeded", "failed", "cancelled")


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "-"


class Overview:
    """Builds the overview pages from the digests of every run in the portal."""

    def __init__(
        self,
        digests: Iterable[RunDigest],
        redact: Redact,
        title: str,
        *,
        ops: dict[str, list[Metrics]] | None = None,
    ) -> None:
        self.digests = sorted(digests, key=lambda d: (-d.run.created, d.run.id))
        #: the fleet's own runs: the figures leave out the runs audits made (listed still)
        self.fleet = [d for d in self.digests if not d.run.audit]
        self.redact = redact
        self.title = title
        #: ``pilothouse metrics`` by crew and by model: the same numbers as the CLI's
        self.ops = ops or {}

    def paths(self) -> list[str]:
        """The docs-relative path of every overview page (written or not)."""
        fixed = ["index.md", "runs/index.md", "escalations.md", "failures.md",
                 "crews/index.md", "personas/index.md"]  # fmt: skip
        hours = {hour_of(d.run.created) for d in self.digests}
        return [
            *fixed,
            *(hour_path(h) for h in hours),
            *(day_path(h[:10]) for h in hours),
            *(crew_path(c) for c in {d.run.crew for d in self.digests}),
            *(persona_path(c, p) for c, p in self._persona_steps),
        ]

    def pages(self, hours: set[str] | None = None) -> dict[str, str]:
        """The overview pages by docs-relative path; of the hour pages only those of
        ``hours`` (all when None)."""
        pages = {
            "index.md": self.home(),
            "runs/index.md": self.run_index(),
            "escalations.md": self.escalations(),
            "failures.md": self.failures(),
            "crews/index.md": self.crew_index(),
            "personas/index.md": self.persona_index(),
        }
        by_hour: dict[str, list[RunDigest]] = defaultdict(list)
        by_crew: dict[str, list[RunDigest]] = defaultdict(list)
        for d in self.digests:
            by_hour[hour_of(d.run.created)].append(d)
            by_crew[d.run.crew].append(d)
        by_day: dict[str, list[str]] = defaultdict(list)
        for hour, digests in by_hour.items():
            by_day[hour[:10]].append(hour)
            if hours is not None and hour not in hours:
                continue
            page = hour_path(hour)
            title = f"Runs of {hour[:10]}, {hour[11:]}:00 to {hour[11:]}:59 UTC"
            pages[page] = f"# {title}\n\n{self._run_table(page, digests)}\n"
        for day, hours in by_day.items():
            page = day_path(day)
            rows = [[link(f"{h[11:]}:00", rel(page, hour_path(h))), str(len(by_hour[h]))]
                    for h in sorted(hours, reverse=True)]  # fmt: skip
            pages[page] = f"# Runs of {day}\n\n{table(['hour (UTC)', 'runs'], rows)}\n"
        for crew, digests in by_crew.items():
            pages[crew_path(crew)] = self.crew_page(crew, digests)
        for (crew, persona), steps in self._persona_steps.items():
            pages[persona_path(crew, persona)] = self.persona_page(crew, persona, steps)
        return pages

    # -- pages -----------------------------------------------------------------------

    def home(self) -> str:
        """KPIs, charts over time and per crew."""
        ds = self.fleet
        counts = Counter(d.run.status for d in ds)
        finished = sum(counts[s] for s in FINAL)
        escalated = sum(1 for d in ds if d.escalations)
        tokens = sum(d.run.input_tokens + d.run.output_tokens for d in ds)
        cost = sum(d.run.cost_usd for d in ds)
        calls = sum(s.calls for d in ds for s in d.steps)
        errors = sum(d.model_errors for d in ds)
        kpis = table(
            [
                "runs",
                "succeeded",
                "failed",
                "escalated",
                "tokens",
                "cost",
                "model calls",
                "model errors",
            ],
            [
                [
                    f"{len(ds):,}",
                    _pct(counts["succeeded"], finished),
                    _pct(counts["failed"], finished),
                    _pct(escalated, len(ds)),
                    f"{tokens:,}",
                    money(cost),
                    f"{calls:,}",
                    _pct(errors, calls),
                ]
            ],
        )
        days = sorted({day_of(d.run.created) for d in ds})[-30:]
        per_day: dict[str, Counter[str]] = {day: Counter() for day in days}
        cost_day: Counter[str] = Counter()
        for d in ds:
            day = day_of(d.run.created)
            if day in per_day:
                status = d.run.status if d.run.status in FINAL else "active"
                per_day[day][status] += 1
                cost_day[day] += d.run.cost_usd
        statuses = [s for s in (*FINAL, "active") if any(per_day[x][s] for x in days)]
        runs_chart = stacked_bars(
            "Runs per day by status", days, {s: [per_day[x][s] for x in days] for s in statuses}
        )
        cost_chart = (
            stacked_bars(
                "Cost per day (USD)", days, {"cost": [cost_day[x] for x in days]}, fmt=money
            )
            or f"No cost so far: every model call in this window cost {money(0)}."
        )
        crews = self._crew_rows("index.md")
        crew_cost = sorted(
            ((c, sum(d.run.cost_usd for d in g)) for c, g in self._by_crew), key=lambda x: -x[1]
        )[:12]
        crew_tokens = sorted(
            (
                (c, float(sum(d.run.input_tokens + d.run.output_tokens for d in g)))
                for c, g in self._by_crew
            ),
            key=lambda x: -x[1],
        )[:12]
        generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        return "\n".join(
            [
                f"# {inline(self.title, self.redact)}",
                "",
                f"Regenerated from the run log on {generated}. Every run page shows what each"
                " persona saw, the model calls, tool calls, guardrail verdicts and human decisions"
                " behind its output.",
                "",
                *self._audit_note(),
                "## Key figures",
                "",
                kpis,
                "",
                "## Runs over time",
                "",
                runs_chart,
                "",
                cost_chart,
                "",
                "## Crews",
                "",
                crews,
                "",
                "### Cost per crew",
                "",
                hbars("Cost per crew", crew_cost, fmt=money) or f"Every crew cost {money(0)}.",
                "",
                "### Tokens per crew",
                "",
                hbars("Tokens per crew", crew_tokens),
                "",
                *self._ops_section(),
                f"See also: {link('all runs', 'runs/index.md')}"
                f" · {link('escalations', 'escalations.md')} · {link('failures', 'failures.md')}"
                f" · {link('personas', 'personas/index.md')} · {link('audits', 'audits/index.md')}",
                "",
            ]
        )

    def run_index(self) -> str:
        """The latest runs and one page per day."""
        page = "runs/index.md"
        days = Counter(day_of(d.run.created) for d in self.digests)
        day_rows = [
            [link(day, rel(page, day_path(day))), str(n)]
            for day, n in sorted(days.items(), reverse=True)
        ]
        return "\n".join(
            [
                "# Runs",
                "",
                "Search (at the top) finds a run by its id, crew, input or output. Runs by crew:"
                f" {link('crews', rel(page, 'crews/index.md'))}; by outcome:"
                f" {link('failures', rel(page, 'failures.md'))},"
                f" {link('escalations', rel(page, 'escalations.md'))}.",
                "",
                f"## Latest {min(INDEX_LATEST, len(self.digests))}",
                "",
                self._run_table(page, self.digests[:INDEX_LATEST]) or "No runs yet.",
                "",
                "## By day",
                "",
                table(["day", "runs"], day_rows),
                "",
            ]
        )

    def escalations(self) -> str:
        """Every escalation with what the person decided."""
        page = "escalations.md"
        rows = []
        for d in self.digests:
            for e in d.escalations:
                target = rel(page, run_path(d.run.id))
                decision = e.decision or f"*{undecided(d.run.status)}*"
                if e.by:
                    decision += f" by {inline(e.by, self.redact)} at {when(e.decided_at)}"
                rows.append(
                    [
                        when(e.raised),
                        link(d.run.id, f"{target}#escalations"),
                        inline(d.run.crew, self.redact),
                        link(inline(e.persona, self.redact), f"{target}#{step_anchor(e.step_id)}"),
                        e.kind,
                        f"{e.risk:.2f}",
                        inline(e.reason, self.redact, 80),
                        decision,
                        inline(e.note, self.redact, 60),
                    ]
                )
        body = table(
            [
                "raised (UTC)",
                "run",
                "crew",
                "persona",
                "kind",
                "risk",
                "reason",
                "decision",
                "note",
            ],
            rows,
        )
        return f"# Escalations\n\n{body or 'No escalation so far.'}\n"

    def failures(self) -> str:
        """Every failed run: kind, exception, plugin, step, message, limit hits."""
        page = "failures.md"
        rows = []
        for d in self.digests:
            f = d.failure
            if f is None:
                continue
            target = rel(page, run_path(d.run.id))
            step = (
                link(inline(f.step_id, self.redact), f"{target}#{step_anchor(f.step_id)}")
                if f.step_id
                else "-"
            )
            rows.append(
                [
                    when(d.run.updated),
                    link(d.run.id, f"{target}#failure"),
                    inline(d.run.crew, self.redact),
                    ("limit hit" if f.kind == "limit" else f.kind)
                    + (f" ({d.run.check} run)" if d.run.check else ""),
                    inline(f.error_type, self.redact),
                    inline(f.plugin or "-", self.redact),
                    step,
                    inline(f.message, self.redact, 100),
                ]
            )
        body = table(
            ["when (UTC)", "run", "crew", "kind", "exception", "plugin", "step", "message"], rows
        )
        return f"# Failures\n\n{body or 'No failed run.'}\n"

    def crew_index(self) -> str:
        """Every crew with its numbers."""
        return f"# Crews\n\n{self._crew_rows('crews/index.md') or 'No runs yet.'}\n"

    def crew_page(self, crew: str, digests: list[RunDigest]) -> str:
        """One crew: numbers, personas, runs."""
        page = crew_path(crew)
        personas = sorted({s.persona for d in digests for s in d.steps})
        plinks = ", ".join(
            link(inline(p, self.redact), rel(page, persona_path(crew, p))) for p in personas
        )
        return "\n".join(
            [
                f"# Crew {inline(crew, self.redact)}",
                "",
                self._crew_rows(page, only=crew),
                "",
                f"Personas: {plinks or '-'}",
                "",
                f"## Latest {min(LATEST, len(digests))} runs",
                "",
                self._run_table(page, digests[:LATEST]),
                "",
            ]
        )

    def persona_index(self) -> str:
        """Every persona of every crew with its numbers."""
        page = "personas/index.md"
        rows = []
        for (crew, persona), steps in sorted(self._persona_steps.items()):
            rows.append(
                [
                    link(
                        f"{inline(crew, self.redact)} / {inline(persona, self.redact)}",
                        rel(page, persona_path(crew, persona)),
                    ),
                    str(len(steps)),
                    f"{sum(s.tokens for _, s in steps):,}",
                    money(sum(s.cost_usd for _, s in steps)),
                    str(sum(s.flags for _, s in steps)),
                ]
            )
        body = table(["persona", "steps", "tokens", "cost", "flags"], rows)
        return f"# Personas\n\n{body or 'No steps yet.'}\n"

    def persona_page(self, crew: str, persona: str, steps: list) -> str:
        """One persona: its numbers and its latest steps, each linked to the run."""
        page = persona_path(crew, persona)
        calls = sum(s.calls for _, s in steps)
        latency = sum(s.latency_ms for _, s in steps) / calls if calls else 0.0
        models = Counter(s.model for _, s in steps)
        rows = [
            [
                when(d.run.created),
                link(
                    f"{d.run.id} step {inline(s.step_id, self.redact)}",
                    f"{rel(page, run_path(d.run.id))}#{step_anchor(s.step_id)}",
                ),
                f"{s.tokens:,}",
                str(s.flags),
                inline(s.output, self.redact, 100),
            ]
            for d, s in steps[:LATEST]
        ]
        crew_link = link(inline(crew, self.redact), rel(page, crew_path(crew)))
        return "\n".join(
            [
                f"# {inline(persona, self.redact)} ({crew_link})",
                "",
                table(
                    ["steps", "model calls", "tokens", "cost", "mean latency", "flags", "models"],
                    [
                        [
                            str(len(steps)),
                            str(calls),
                            f"{sum(s.tokens for _, s in steps):,}",
                            money(sum(s.cost_usd for _, s in steps)),
                            f"{latency:.0f} ms",
                            str(sum(s.flags for _, s in steps)),
                            ", ".join(inline(m, self.redact) for m in models),
                        ]
                    ],
                ),
                "",
                "## Latest steps",
                "",
                table(["run started (UTC)", "step", "tokens", "flags", "output"], rows),
                "",
            ]
        )

    # -- parts -----------------------------------------------------------------------

    def _audit_note(self) -> list[str]:
        audit_runs = len(self.digests) - len(self.fleet)
        if not audit_runs:
            return []
        return [
            f"The {audit_runs:,} runs made by audits (bias probes, adversarial suites) are left"
            f" out of these figures; they are listed with the runs and on the"
            f" {link('audits', 'audits/index.md')} pages.",
            "",
        ]

    def _ops_section(self) -> list[str]:
        """LLM-ops per crew and per model, the numbers ``pilothouse metrics`` prints."""
        if not self.ops:
            return []

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value:.0%}"

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:,.0f} ms"

        crews = [
            [
                inline(m.group, self.redact),
                str(m.runs),
                pct(m.success_rate),
                pct(m.error_rate),
                pct(m.escalation_rate),
                pct(m.override_rate),
                "-" if m.tokens_per_success is None else f"{m.tokens_per_success:,.0f}",
                ms(m.latency_p50_ms),
                ms(m.latency_p95_ms),
                money(m.cost_usd),
            ]
            for m in self.ops.get("crew", [])
        ]
        models = [
            [
                inline(m.group, self.redact),
                f"{m.model_calls:,}",
                pct(m.call_error_rate),
                f"{m.input_tokens:,}",
                f"{m.output_tokens:,}",
                ms(m.latency_p50_ms),
                ms(m.latency_p95_ms),
                ms(m.queued_p95_ms),
                money(m.cost_usd),
            ]
            for m in self.ops.get("model", [])
        ]
        return [
            "## LLM-ops",
            "",
            "The numbers `pilothouse metrics` prints. Override rate: people's edits and"
            " rejections over their decisions; tokens per successful run: all tokens spent"
            " over the runs that succeeded; waiting p95: of a call's latency, the time it"
            " waited for the endpoint's own limits (concurrency, rate limits).",
            "",
            table(["crew", "runs", "success", "errors", "escalated", "overridden",
                   "tokens per success", "latency p50", "latency p95", "cost"], crews),
            "",
            table(["model", "calls", "errors", "tokens in", "tokens out", "latency p50",
                   "latency p95", "waiting p95", "cost"], models),
            "",
        ]  # fmt: skip

    def _run_table(self, page: str, digests: list[RunDigest]) -> str:
        rows = [
            [
                when(d.run.created),
                link(d.run.id, rel(page, run_path(d.run.id))),
                link(inline(d.run.crew, self.redact), rel(page, crew_path(d.run.crew))),
                d.run.status
                + (" · escalated" if d.escalations else "")
                + (f" · {d.run.check}" if d.run.check else ""),
                str(d.run.steps),
                f"{d.run.input_tokens + d.run.output_tokens:,}",
                money(d.run.cost_usd),
                inline(d.run.input, self.redact, 80),
            ]
            for d in digests
        ]
        return table(
            ["started (UTC)", "run", "crew", "status", "steps", "tokens", "cost", "input"], rows
        )

    @functools.cached_property
    def _by_crew(self) -> list[tuple[str, list[RunDigest]]]:
        groups: dict[str, list[RunDigest]] = defaultdict(list)
        for d in self.fleet:
            groups[d.run.crew].append(d)
        return sorted(groups.items())

    def _crew_rows(self, page: str, only: str | None = None) -> str:
        rows = []
        for crew, ds in self._by_crew:
            if only is not None and crew != only:
                continue
            counts = Counter(d.run.status for d in ds)
            finished = sum(counts[s] for s in FINAL)
            rows.append(
                [
                    link(inline(crew, self.redact), rel(page, crew_path(crew))),
                    str(len(ds)),
                    _pct(counts["succeeded"], finished),
                    _pct(counts["failed"], finished),
                    _pct(sum(1 for d in ds if d.escalations), len(ds)),
                    f"{sum(d.run.input_tokens + d.run.output_tokens for d in ds):,}",
                    money(sum(d.run.cost_usd for d in ds)),
                ]
            )
        return table(["crew", "runs", "succeeded", "failed", "escalated", "tokens", "cost"], rows)

    @functools.cached_property
    def _persona_steps(self) -> dict[tuple[str, str], list]:
        found: dict[tuple[str, str], list] = defaultdict(list)
        for d in self.fleet:
            for s in d.steps:
                found[(d.run.crew, s.persona)].append((d, s))
        return found
