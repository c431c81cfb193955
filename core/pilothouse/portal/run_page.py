"""One page per run: input, output with its evidence, and every step in full.

Anchors are stable so other pages (and auditors' notes) can point into a run:
``#step-<id>``, ``#call-<seq>`` for a model or tool call, ``#passage-<seq>-<n>``
for the n-th passage of a retrieval, ``#escalations`` and ``#failure``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ..events import BaseEvent
from ..explain import claim_evidence, evidence_of
from ..store import RunSummary
from .markdown import Redact, block, inline, link, table

ACTIONS = {"pass": "pass", "fix": "fix", "flag": "**flag**", "block": "**block**"}


def when(ts: float | None) -> str:
    """A timestamp as UTC date and time."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"


def safe_name(text: str) -> str:
    """Letters, digits, spaces, dots and dashes only (for titles and file names)."""
    return re.sub(r"[^\w .-]", "", text)[:60]


def step_anchor(step_id: str | None) -> str:
    """The anchor of a step (dots are kept out of ids)."""
    return "step-" + (step_id or "run").replace(".", "-")


def run_page(run: RunSummary, events: list[BaseEvent], redact: Redact, *, crew_page: str) -> str:
    """The Markdown of a run's page."""
    out: list[str] = [
        "---",
        # plain characters only: themes put the title into <title> and the search index
        f"title: {json.dumps('Run ' + run.id + ' ' + safe_name(run.crew))}",
        "---",
        "",
        f"# Run {run.id}",
        "",
        f"**{run.status}** · crew {link(inline(run.crew, redact), crew_page)}"
        f" · started {when(run.created)} UTC · {run.steps} steps"
        f" · {run.input_tokens + run.output_tokens:,} tokens · ${run.cost_usd:.4f}",
        "",
        "## Input",
        "",
        block(run.input, redact),
        "",
    ]
    anchors = _anchors(events)
    if run.output is not None:
        out += ["## Output", "", block(run.output, redact), ""]
        out += _claims(run.output, events, anchors, redact)
        out += _why(events, anchors, redact)
    out += _escalations(events, redact)
    out += _failure(events, redact)
    # The timeline is long and not what people search for: only the head of a
    # run page (input, output, claims, escalations, failure) goes into the index.
    out += ["## Timeline {data-search-exclude}", ""]
    for event in events:
        out += _event(event, anchors, redact)
    return "\n".join(out) + "\n"


def _anchors(events: list[BaseEvent]) -> dict[tuple[str, str | None, str], str]:
    """Where each piece of evidence lives on the page: (kind, step, ref) -> anchor."""
    found: dict[tuple[str, str | None, str], str] = {}
    for event in events:
        e: Any = event
        if event.type == "retrieval":
            for n, p in enumerate(e.passages, start=1):
                found.setdefault(("passage", e.step_id, p.id), f"passage-{e.seq}-{n}")
        elif event.type == "tool_call":
            found.setdefault(("tool", e.step_id, e.tool), f"call-{e.seq}")
        elif event.type == "step_finished":
            found.setdefault(("output", e.step_id, e.persona), step_anchor(e.step_id))
    return found


def _claims(output: str, events: list[BaseEvent], anchors: dict, redact: Redact) -> list[str]:
    evidence = [item for event in events for item in evidence_of(event)]
    calls = {e.step_id: e.seq for e in events if e.type == "model_call"}
    rows = []
    for claim, backing in claim_evidence(output, evidence):
        links = []
        for kind, ref, step_id, _ in backing[:4]:
            anchor = anchors.get((kind, step_id, ref))
            if anchor:
                label = {"passage": "passage", "tool": "tool", "output": "output of"}[kind]
                links.append(link(f"{label} {inline(ref, redact, 40)}", f"#{anchor}"))
        if step_id_of := (backing[0][2] if backing else None):
            links.append(link(f"step {inline(step_id_of, redact)}", f"#{step_anchor(step_id_of)}"))
            if step_id_of in calls:
                links.append(link("model call", f"#call-{calls[step_id_of]}"))
        rows.append([inline(claim, redact, 160), " · ".join(links) or "*no evidence found*"])
    if not rows:
        return []
    return ["### Claims and their evidence", "", table(["claim", "evidence"], rows), ""]


def _why(events: list[BaseEvent], anchors: dict, redact: Redact) -> list[str]:
    """The ``output_explained`` ranking: the evidence behind the output, by its share."""
    explained: Any = next((e for e in reversed(events) if e.type == "output_explained"), None)
    if explained is None or not explained.evidence:
        return []
    labels = {"passage": "passage", "tool": "tool result", "output": "output of"}
    rows = []
    for a in explained.evidence:
        label = f"{labels.get(a.kind, a.kind)} {inline(a.ref, redact, 40)}"
        anchor = anchors.get((a.kind, a.step_id, a.ref))
        rows.append(
            [
                f"{a.score:.0%}",
                link(label, f"#{anchor}") if anchor else label,
                inline(a.step_id or "-", redact),
                inline(a.excerpt, redact, 140),
            ]
        )
    return [
        "### Why: the evidence behind the output",
        "",
        "Each piece's share of the output's claims (attribution scores from the log).",
        "",
        table(["share", "evidence", "step", "excerpt"], rows),
        "",
    ]


def _escalations(events: list[BaseEvent], redact: Redact) -> list[str]:
    raised = [e for e in events if e.type == "escalation_raised"]
    if not raised:
        return []
    decided = {e.escalation_id: e for e in events if e.type == "escalation_decided"}  # type: ignore[attr-defined]
    out = ["## Escalations {#escalations}", ""]
    for r in raised:
        e: Any = r
        d: Any = decided.get(e.escalation_id)
        out += [
            f"### Escalation {inline(e.escalation_id, redact)}",
            "",
            f"{link('step ' + inline(e.step_id, redact), '#' + step_anchor(e.step_id))}"
            f" · {inline(e.persona, redact)} · {e.kind} · risk {e.risk:.2f}"
            f" · raised {when(e.ts)} UTC",
            "",
            f"**Reason:** {inline(e.reason, redact)}",
            "",
        ]
        if e.evidence:
            evidence_text = json.dumps(e.evidence, indent=2, default=str)
            out += ["**Evidence:**", "", block(evidence_text, redact), ""]
        if e.proposed is not None:
            out += ["**Proposed:**", "", block(e.proposed, redact), ""]
        if d is None:
            out += ["**Decision:** still waiting", ""]
        else:
            out += [
                f"**Decision:** {d.decision} by {inline(d.by, redact)} at {when(d.decided_at)} UTC"
                + (f" · note: {inline(d.note, redact)}" if d.note else ""),
                "",
            ]
            if d.text is not None:
                out += ["**Text the person wrote:**", "", block(d.text, redact), ""]
    return out


def _failure(events: list[BaseEvent], redact: Redact) -> list[str]:
    failed: Any = next((e for e in events if e.type == "run_failed"), None)
    limits = [e for e in events if e.type == "limit_hit"]
    errors = [e for e in events if e.type == "error"]
    if failed is None and not limits:
        return []
    out = ["## Failure {#failure}", ""]
    if failed is not None:
        out += [
            f"**{failed.kind}** · {inline(failed.error_type, redact)}"
            + (f" · plugin {inline(failed.plugin, redact)}" if failed.plugin else ""),
            "",
            block(failed.message, redact),
            "",
        ]
    for e in limits:
        x: Any = e
        out += [f"**Limit hit:** {inline(x.limit, redact)}: {inline(x.message, redact)}", ""]
    for e in errors:
        x = e
        out += [
            f"**{inline(x.error_type, redact)}** traceback:",
            "",
            block(x.traceback, redact),
            "",
        ]
    return out


def _event(event: BaseEvent, anchors: dict, redact: Redact) -> list[str]:
    e: Any = event
    t = event.type
    if t == "step_started":
        return [
            f"### Step {inline(e.step_id, redact)}: {inline(e.persona, redact)}"
            f" {{#{step_anchor(e.step_id)} data-search-exclude}}",
            "",
            f"model {inline(e.model, redact)} · {when(e.ts)} UTC",
            "",
        ]
    if t == "context_built":
        rows = [
            [p.kind, inline(p.source, redact), inline(p.ref, redact), str(p.tokens)]
            for p in e.pieces
        ]
        return [
            f"**Context window** ({e.tokens} tokens)",
            "",
            table(["piece", "source", "ref", "tokens"], rows),
            "",
        ]
    if t == "retrieval":
        out = [
            f'<a id="retrieval-{e.seq}"></a>**Retrieval** by {inline(e.retriever, redact)}',
            "",
            f"query: {inline(e.query, redact)}",
            "",
        ]
        for n, p in enumerate(e.passages, start=1):
            out += [
                f'<a id="passage-{e.seq}-{n}"></a>**{inline(p.id, redact)}** · score {p.score:.3f}'
                f" · source {inline(p.source, redact)}",
                "",
                block(p.text, redact, "ph-text ph-passage"),
                "",
            ]
        return out
    if t == "guardrail":
        if e.action == "pass" and e.stage == "retrieval":
            return []  # one line per passing passage would drown the page
        line = (
            f"guardrail **{inline(e.guardrail, redact)}** ({e.stage}):"
            f" {ACTIONS.get(e.action, e.action)}"
        )
        if e.reason:
            line += f", {inline(e.reason, redact)}"
        if e.risk:
            line += f" · risk {e.risk:.2f}"
        return [line, "", *_claim_scores(e.details, redact)]
    if t == "model_call":
        u = e.usage
        offline = " (offline model)" if e.offline else ""
        cost = f"${e.cost_usd:.5f}" if e.cost_usd is not None else "cost unknown"
        out = [
            f'<a id="call-{e.seq}"></a>**Model call** {inline(e.model, redact)}{offline}'
            f" · {u.input_tokens} in + {u.output_tokens} out tokens · {cost}"
            f" · {e.latency_ms:.0f} ms",
            "",
            "<details><summary>Context window as the model saw it</summary>",
            "",
        ]
        for m in e.messages:
            out += [f'<div class="ph-role">{m.role}</div>', "", block(m.content, redact), ""]
        out += ["</details>", "", "**Reply:**", "", block(e.text, redact), ""]
        for call in e.tool_calls:
            out += [
                f"asks for tool **{inline(call.name, redact)}**:",
                "",
                block(call.arguments, redact),
                "",
            ]
        if e.error:
            out += ["**Error:**", "", block(e.error, redact), ""]
        return out
    if t == "tool_call":
        out = [
            f'<a id="call-{e.seq}"></a>**Tool** {inline(e.tool, redact)}',
            "",
            f"{e.duration_ms:.0f} ms · arguments:",
            "",
            block(e.arguments, redact),
            "",
        ]
        if e.error:
            out += ["**Error:**", "", block(e.error, redact), ""]
        else:
            out += ["**Result:**", "", block(e.result, redact), ""]
        return out
    if t == "step_finished":
        to = f" → handed to {inline(e.handoff_to, redact)}" if e.handoff_to else ""
        return [f"**Step output**{to}:", "", block(e.output, redact), ""]
    if t == "model_switched":
        return [
            f"model {inline(e.failed, redact)} failed, switched to {inline(e.next, redact)}:"
            f" {inline(e.reason, redact)}",
            "",
        ]
    if t == "escalation_raised":
        return [
            f"paused for a person: {link('escalation', '#escalations')}"
            f" ({e.kind}, risk {e.risk:.2f})",
            "",
        ]
    if t == "escalation_decided":
        return [f"decision: **{e.decision}** by {inline(e.by, redact)}", ""]
    if t == "limit_hit":
        return [f"**limit hit** {inline(e.limit, redact)}: {inline(e.message, redact)}", ""]
    if t == "run_resumed":
        return [f"*resumed after {len(e.completed_steps)} finished steps*", ""]
    if t == "memory_written":
        return [f"remembered about {inline(e.subject, redact)} ({inline(e.channel, redact)}):"
                f" {inline(e.fact, redact)}", ""]  # fmt: skip
    return []


def _claim_scores(details: dict[str, Any], redact: Redact) -> list[str]:
    """A groundedness verdict's claims: each with its scores, method and best evidence."""
    scored = details.get("claims")
    if not isinstance(scored, list) or not scored:
        return []

    def score(value: Any) -> str:
        return f"{value:.2f}" if isinstance(value, int | float) else "-"

    rows = []
    for c in scored:
        if not isinstance(c, dict):
            continue
        judge = c.get("judge")
        rows.append(
            [
                inline(str(c.get("claim", "")), redact, 120),
                "yes" if c.get("supported") else "**no**",
                inline(str(c.get("method", "")), redact),
                score(c.get("lexical", c.get("support"))),
                score(c.get("semantic")),
                "-" if judge is None else ("supported" if judge else "unsupported"),
                inline(", ".join(map(str, c.get("missing_figures", []))) or "-", redact),
                inline(str(c.get("evidence", "")), redact, 120),
            ]
        )
    header = ["claim", "supported", "by", "lexical", "semantic", "judge", "figures not in evidence",
              "best evidence"]  # fmt: skip
    out = [table(header, rows), ""]
    if details.get("judge_error"):
        out += [f"judge failed, similarity verdicts kept: {inline(details['judge_error'], redact)}",
                ""]  # fmt: skip
    return out
