"""One page per run: input, output with its evidence, and every step in full.

The page is a Markdown file holding a title and one raw HTML block (see
:mod:`pilothouse.portal.html`): valid for any Markdown builder, and pasted
into the theme as it is by the portal's builder. Anchors are stable so other
pages (and auditors' notes) can point into a run: ``#step-<id>``,
``#call-<seq>`` for a model or tool call, ``#passage-<seq>-<n>`` for the n-th
passage of a retrieval, ``#escalations`` and ``#failure``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ..decision import decision_view
from ..engine.evidence import claim_evidence, evidence_of
from ..events import FINAL_STATUSES, BaseEvent
from ..store.base import RunSummary
from .charts import money
from .decision_html import decision_html
from .html import block, heading, link, para, table
from .html import text as inline
from .markdown import Redact

ACTIONS = {"pass": "pass", "fix": "fix", "flag": "<strong>flag</strong>",
           "block": "<strong>block</strong>"}  # fmt: skip
#: the class of the block that holds a run page's body
BODY = "ph-run"


def when(ts: float | None) -> str:
    """A timestamp as UTC date and time."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "-"


def safe_name(text: str) -> str:
    """Letters, digits, spaces, dots and dashes only (for titles and file names)."""
    return re.sub(r"[^\w .-]", "", text)[:60]


def step_anchor(step_id: str | None) -> str:
    """The anchor of a step (dots are kept out of ids)."""
    return "step-" + (step_id or "run").replace(".", "-")


def _labels(events: list[BaseEvent], redact: Redact) -> list[str]:
    """Where the run came from (its start's labels), as one line; none when unlabelled."""
    labels: dict[str, str] = next(
        (e.labels for e in events if e.type == "run_started"),  # type: ignore[attr-defined]
        {},
    )
    if not labels:
        return []
    shown = " · ".join(f"{inline(k, redact)} <code>{inline(v, redact)}</code>"
                       for k, v in sorted(labels.items()))  # fmt: skip
    return [para(f"labels: {shown}")]


def run_page(run: RunSummary, events: list[BaseEvent], redact: Redact, *, crew_page: str) -> str:
    """The Markdown of a run's page: front matter, a title, the body as one HTML block.

    ``crew_page`` is the (``.html``) link from the run's page to its crew's.
    """
    anchors = _anchors(events)
    body = [
        para(
            f"<strong>{run.status}</strong> · crew {link(inline(run.crew, redact), crew_page)}"
            f" · started {when(run.created)} UTC · {run.steps} steps"
            f" · {run.input_tokens + run.output_tokens:,} tokens · {money(run.cost_usd)}"
        ),
        *_labels(events, redact),
        heading(2, "Input", "input"),
        block(run.input, redact, role="input"),
    ]
    if run.output is not None:
        body += [heading(2, "Output", "output"), block(run.output, redact, role="output")]
        body += _claims(run.output, events, anchors, redact)
        body += _why(events, anchors, redact)
    body += _escalations(events, run.status, redact)
    body += _failure(events, redact)
    body.append(heading(2, "Timeline", "timeline"))
    for event in events:
        body += _event(event, anchors, redact)
    return "\n".join(
        [
            "---",
            # plain characters only: themes put the title into <title> and the search index
            f"title: {json.dumps('Run ' + run.id + ' ' + safe_name(run.crew))}",
            "---",
            "",
            f"# Run {run.id}",
            "",
            f'<div class="{BODY}">',
            *body,
            "</div>",
            "",
        ]
    )


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
        rows.append([inline(claim, redact, 160), " · ".join(links) or "<em>no evidence found</em>"])
    if not rows:
        return []
    return [heading(3, "Claims and their evidence", "claims"), table(["claim", "evidence"], rows)]


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
        heading(3, "Why: the evidence behind the output", "why"),
        para("Each piece's share of the output's claims (attribution scores from the log)."),
        table(["share", "evidence", "step", "excerpt"], rows),
    ]


def undecided(run_status: str) -> str:
    """What an escalation nobody decided shows: it waits, or its run ended first."""
    if run_status in FINAL_STATUSES:
        return f"none: the run {run_status} before anyone decided"
    return "still waiting"


def _escalations(events: list[BaseEvent], run_status: str, redact: Redact) -> list[str]:
    raised = [e for e in events if e.type == "escalation_raised"]
    if not raised:
        return []
    decided = {e.escalation_id: e for e in events if e.type == "escalation_decided"}  # type: ignore[attr-defined]
    out = [heading(2, "Escalations", "escalations")]
    for r in raised:
        e: Any = r
        d: Any = decided.get(e.escalation_id)
        out += [
            heading(3, f"Escalation {inline(e.escalation_id, redact)}"),
            para(
                link("step " + inline(e.step_id, redact), "#" + step_anchor(e.step_id)),
                f" · {inline(e.persona, redact)} · {inline(e.kind, redact)} · risk {e.risk:.2f}"
                f" · raised {when(e.ts)} UTC",
            ),
            *decision_html(decision_view(e), redact),
        ]
        if d is None:
            out.append(para(f"<strong>Decision:</strong> {undecided(run_status)}"))
            continue
        note = f" · note: {inline(d.note, redact)}" if d.note else ""
        out.append(
            para(
                f"<strong>Decision:</strong> {inline(d.decision, redact)} by"
                f" {inline(d.by, redact)} at {when(d.decided_at)} UTC{note}"
            )
        )
        if d.text is not None:
            out += [para("<strong>Text the person wrote:</strong>"), block(d.text, redact)]
    return out


def _failure(events: list[BaseEvent], redact: Redact) -> list[str]:
    failed: Any = next((e for e in events if e.type == "run_failed"), None)
    limits = [e for e in events if e.type == "limit_hit"]
    errors = [e for e in events if e.type == "error"]
    if failed is None and not limits:
        return []
    out = [heading(2, "Failure", "failure")]
    if failed is not None:
        plugin = f" · plugin {inline(failed.plugin, redact)}" if failed.plugin else ""
        out += [
            para(
                f"<strong>{inline(failed.kind, redact)}</strong>"
                f" · {inline(failed.error_type, redact)}{plugin}"
            ),
            block(failed.message, redact),
        ]
    for e in limits:
        x: Any = e
        out.append(
            para(
                f"<strong>Limit hit:</strong> {inline(x.limit, redact)}:"
                f" {inline(x.message, redact)}"
            )
        )
    for e in errors:
        x = e
        out += [para(f"<strong>{inline(x.error_type, redact)}</strong> traceback:"),
                block(x.traceback, redact)]  # fmt: skip
    return out


def _event(event: BaseEvent, anchors: dict, redact: Redact) -> list[str]:
    e: Any = event
    t = event.type
    if t == "step_started":
        return [
            heading(
                3,
                f"Step {inline(e.step_id, redact)}: {inline(e.persona, redact)}",
                step_anchor(e.step_id),
            ),
            para(f"model {inline(e.model, redact)} · {when(e.ts)} UTC"),
        ]
    if t == "context_built":
        rows = [
            [inline(p.kind, redact), inline(p.source, redact), inline(p.ref, redact),
             str(p.tokens)]
            for p in e.pieces
        ]  # fmt: skip
        return [
            para(f"<strong>Context window</strong> ({e.tokens} tokens)"),
            table(["piece", "source", "ref", "tokens"], rows),
        ]
    if t == "retrieval":
        out = [
            para(
                f'<a id="retrieval-{e.seq}"></a><strong>Retrieval</strong> by'
                f" {inline(e.retriever, redact)}"
            ),
            para(f"query: {inline(e.query, redact)}"),
        ]
        for n, p in enumerate(e.passages, start=1):
            out += [
                para(
                    f'<a id="passage-{e.seq}-{n}"></a><strong>{inline(p.id, redact)}</strong>'
                    f" · score {p.score:.3f} · source {inline(p.source, redact)}"
                ),
                block(p.text, redact, "ph-text ph-passage"),
            ]
        return out
    if t == "guardrail":
        if e.action == "pass" and e.stage == "retrieval":
            return []  # one line per passing passage would drown the page
        line = (
            f"guardrail <strong>{inline(e.guardrail, redact)}</strong> ({e.stage}):"
            f" {ACTIONS.get(e.action, e.action)}"
        )
        if e.reason:
            line += f", {inline(e.reason, redact)}"
        if e.risk:
            line += f" · risk {e.risk:.2f}"
        return [para(line), *_claim_scores(e.details, redact)]
    if t == "model_call":
        u = e.usage
        offline = " (offline model)" if e.offline else ""
        cost = f"${e.cost_usd:.5f}" if e.cost_usd is not None else "cost unknown"
        out = [
            para(
                f'<a id="call-{e.seq}"></a><strong>Model call</strong>'
                f" {inline(e.model, redact)}{offline}"
                f" · {u.input_tokens} in + {u.output_tokens} out tokens · {cost}"
                f" · {e.latency_ms:.0f} ms"
                + (f" ({e.queue_note})" if e.queue_note else "")
                + (f" · <strong>{e.stop_note}</strong>" if e.stop_note else "")
                + (f" · schema asked as {inline(e.output_mode, redact)}" if e.output_mode else "")
                + (f" · request {inline(e.request_id, redact)}" if e.request_id else "")
            ),
        ]
        if e.output_note:  # a server's words among them: untrusted text
            out.append(para(f"Output mode: {inline(e.output_note, redact)}"))
        out += [
            "<details><summary>Context window as the model saw it</summary>",
        ]
        for m in e.messages:
            out += [f'<div class="ph-role">{inline(m.role, redact)}</div>',
                    block(m.content, redact)]  # fmt: skip
        out.append("</details>")
        if e.text or not (e.tool_calls or e.error):  # a reply that only asks for tools has no text
            out += [para("<strong>Reply:</strong>"), block(e.text, redact)]
        for call in e.tool_calls:
            out += [para(f"asks for tool <strong>{inline(call.name, redact)}</strong>:"),
                    block(call.arguments, redact)]  # fmt: skip
        if e.error:
            out += [para("<strong>Error:</strong>"), block(e.error, redact)]
        return out
    if t == "tool_call":
        where = f"served by {inline(e.source, redact)} · " if e.source and ":" in e.source else ""
        out = [
            para(f'<a id="call-{e.seq}"></a><strong>Tool</strong> {inline(e.tool, redact)}'),
            para(f"{where}{e.duration_ms:.0f} ms · arguments:"),
            block(e.arguments, redact),
        ]
        if e.error:
            out += [para("<strong>Error:</strong>"), block(e.error, redact)]
        elif e.withheld_by:
            why = f"withheld from the model: guardrail {inline(e.withheld_by, redact)} flagged it"
            out += [para(f"<strong>Result</strong> ({why}):"), block(e.result, redact)]
        else:
            out += [para("<strong>Result:</strong>"), block(e.result, redact)]
        return out
    if t == "step_finished":
        to = f" → handed to {inline(e.handoff_to, redact)}" if e.handoff_to else ""
        return [para(f"<strong>Step output</strong>{to}:"), block(e.output, redact)]
    if t == "model_switched":
        return [
            para(
                f"model {inline(e.failed, redact)} failed, switched to"
                f" {inline(e.next, redact)}: {inline(e.reason, redact)}"
            )
        ]
    if t == "escalation_raised":
        return [
            para(
                f"paused for a person: {link('escalation', '#escalations')}"
                f" ({inline(e.kind, redact)}, risk {e.risk:.2f})"
            )
        ]
    if t == "escalation_decided":
        return [para(f"decision: <strong>{inline(e.decision, redact)}</strong> by"
                     f" {inline(e.by, redact)}")]  # fmt: skip
    if t == "limit_hit":
        return [para(f"<strong>limit hit</strong> {inline(e.limit, redact)}:"
                     f" {inline(e.message, redact)}")]  # fmt: skip
    if t == "run_resumed":
        return [para(f"<em>resumed after {len(e.completed_steps)} finished steps</em>")]
    if t == "run_suspended":
        return [para(f"<em>suspended: {inline(e.reason, redact)} (to be resumed)</em>")]
    if t == "memory_written":
        return [para(f"remembered about {inline(e.subject, redact)}"
                     f" ({inline(e.channel, redact)}): {inline(e.fact, redact)}")]  # fmt: skip
    return []


def _failed_parts(claim: dict[str, Any]) -> str:
    """Which fact-bearing parts of a claim its evidence lacks, and why ("-": none)."""
    failed = claim.get("failed") or []
    parts = [f"{f.get('part')}: {f.get('why')}" for f in failed if isinstance(f, dict)]
    parts += [f"figure {x} not in evidence" for x in claim.get("missing_figures", [])]
    return "; ".join(parts) or "-"


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
                "yes" if c.get("supported") else "<strong>no</strong>",
                inline(str(c.get("method", "")), redact),
                score(c.get("lexical", c.get("support"))),
                score(c.get("semantic")),
                "-" if judge is None else ("supported" if judge else "unsupported"),
                inline(_failed_parts(c), redact, 200),
                inline(str(c.get("evidence", "")), redact, 120),
            ]
        )
    header = ["claim", "supported", "by", "lexical", "semantic", "judge", "what failed",
              "best evidence"]  # fmt: skip
    out = [table(header, rows)]
    if details.get("judge_error"):
        out.append(para("judge failed, similarity verdicts kept:"
                        f" {inline(details['judge_error'], redact)}"))  # fmt: skip
    return out
