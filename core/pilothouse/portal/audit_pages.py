"""The audit pages: every audit report of the run store, and one page each.

A bias probe's page shows the positive rate per group, the largest gap with
its interval and test, and the cases that flipped; an adversarial suite's page
shows every payload in both modes, caught or not and by which guardrail. Both
link to the runs the audit made (those the portal holds).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..store.base import AuditRecord
from .charts import hbars, number
from .markdown import Redact, inline, link, table
from .paths import rel, run_path
from .run_page import when

INDEX = "audits/index.md"
#: runs listed on an audit's page (the report keeps them all)
MAX_RUNS = 200


def audit_path(audit_id: str) -> str:
    """Where an audit's page lives in the docs folder."""
    return f"audits/{audit_id}.md"


class AuditPages:
    """The audit index and one page per audit report."""

    def __init__(self, records: Iterable[AuditRecord], redact: Redact, runs: set[str]) -> None:
        self.records = sorted(records, key=lambda r: (-r.created, r.id))
        self.redact = redact
        #: the runs the portal has a page for: only those are linked
        self.runs = runs

    def paths(self) -> list[str]:
        """Every audit page's docs-relative path."""
        return [INDEX, *(audit_path(r.id) for r in self.records)]

    def pages(self) -> dict[str, str]:
        """The pages by docs-relative path."""
        pages = {INDEX: self.index()}
        for record in self.records:
            pages[audit_path(record.id)] = self.page(record)
        return pages

    def index(self) -> str:
        """Every audit, newest first, with what it found."""
        rows = [
            [
                when(r.created),
                link(r.id, rel(INDEX, audit_path(r.id))),
                inline(r.kind, self.redact),
                inline(r.crew, self.redact),
                "nothing found" if r.ok else "**found**",
                inline(r.summary, self.redact, 160),
            ]
            for r in self.records
        ]
        body = table(["when (UTC)", "audit", "kind", "crew", "result", "summary"], rows)
        return "\n".join(
            [
                "# Audits",
                "",
                "Bias probes (`pilothouse audit bias`) and adversarial suites"
                " (`pilothouse audit adversarial`), with the runs they made.",
                "",
                body or "No audit yet.",
                "",
            ]
        )

    def page(self, record: AuditRecord) -> str:
        """One audit: its findings, then its runs."""
        page = audit_path(record.id)
        kind, crew = inline(record.kind, self.redact), inline(record.crew, self.redact)
        title = f"{kind.capitalize()} audit of {crew}"
        result = "Nothing found." if record.ok else "**Found:**"
        if record.kind == "bias":
            findings = self._bias(page, record.report)
        elif record.kind == "adversarial":
            findings = self._adversarial(page, record.report)
        else:  # a plugin's own kind of audit: its summary is what the portal knows how to show
            findings = ""
        return "\n".join(
            [
                f"# {title}",
                "",
                f"Audit `{record.id}`, {when(record.created)} UTC."
                f" {result} {inline(record.summary, self.redact)}",
                "",
                findings,
                "",
                f"## Runs ({len(record.run_ids)})",
                "",
                self._run_links(page, record.run_ids),
                "",
                f"{link('All audits', rel(page, INDEX))}",
                "",
            ]
        )

    # -- parts -----------------------------------------------------------------------

    def _bias(self, page: str, report: dict[str, Any]) -> str:
        rates = report.get("rates", [])
        rows, bars = [], []
        for r in rates:
            rate = r["positive"] / r["total"] if r["total"] else 0.0
            rows.append([inline(r["group"], self.redact), str(r["positive"]), str(r["total"]),
                         f"{rate:.0%}"])  # fmt: skip
            bars.append((str(r["group"]), round(rate * 100, 1)))
        parts = [
            f"Attribute **{inline(report.get('attribute'), self.redact)}**.",
            "",
            "## Positive decisions per group",
            "",
            hbars("Positive decisions per group (%)", bars, fmt=lambda v: f"{number(v)}%"),
            "",
            table(["group", "positive", "runs", "rate"], rows),
            "",
        ]
        pairs = report.get("pairs") or ([report["worst"]] if report.get("worst") else [])
        if pairs:
            rows = []
            for pair in pairs:
                a, b = (inline(g, self.redact) for g in pair["groups"])
                low, high = pair["ci95"]
                rows.append([
                    f"{a} - {b}",
                    f"{pair['difference']:+.1%}",
                    f"{low:+.1%} to {high:+.1%}",
                    f"{pair.get('p_adjusted', pair['p_value']):.4f}",
                    "significant" if pair["significant"] else "not significant",
                ])  # fmt: skip
            detectable = report.get("min_detectable_gap")
            looks = report.get("looks", 1)
            parts += [
                "## Gaps between groups",
                "",
                "Each case is run for every group, so the test compares the groups within"
                " each case (an exact test stratified by case), with Holm's correction when"
                " more than two groups are compared.",
                "",
                table(["groups", "difference", "95% interval", "p-value", "verdict"], rows),
                "",
            ]
            if detectable is not None:
                parts += [
                    f"Smallest gap this probe detects with 80% power: **{detectable:.0%}**"
                    f" (false-alarm rate {report.get('alpha', 0.05):.3g}"
                    + (f", {looks} looks; stopped: {inline(report.get('stopped'), self.redact)}"
                       if looks > 1 else "")
                    + "). A probe that finds nothing rules out only gaps larger than this.",
                    "",
                ]  # fmt: skip
        flipped = report.get("flipped", [])
        if flipped:
            groups = list(flipped[0]["positive_by_group"])
            rows = [
                [inline(f["case"], self.redact, 140),
                 *("yes" if f["positive_by_group"].get(g) else "no" for g in groups)]
                for f in flipped
            ]  # fmt: skip
            header = ["case", *(f"{inline(g, self.redact)} positive" for g in groups)]
            parts += ["## Cases that flipped with the attribute", "", table(header, rows), ""]
        return "\n".join(parts)

    def _adversarial(self, page: str, report: dict[str, Any]) -> str:
        rows = []
        for o in report.get("outcomes", []):
            caught = "caught" if o["caught"] else "**got past**"
            rows.append(
                [
                    inline(o["payload"], self.redact),
                    inline(o["category"], self.redact),
                    o["mode"],
                    caught,
                    inline(", ".join(o["by"]) or "-", self.redact),
                    self._run_link(page, o["run_id"]),
                ]
            )
        header = ["payload", "category", "mode", "result", "caught by", "run"]
        return "## Payloads\n\n" + (table(header, rows) or "No payload was sent.")

    def _run_link(self, page: str, run_id: str) -> str:
        if run_id in self.runs:
            return link(run_id, rel(page, run_path(run_id)))
        return inline(run_id, self.redact)

    def _run_links(self, page: str, run_ids: list[str]) -> str:
        shown = [self._run_link(page, r) for r in run_ids[:MAX_RUNS]]
        more = len(run_ids) - len(shown)
        return " · ".join(shown) + (f" and {more} more" if more > 0 else "") or "None."
