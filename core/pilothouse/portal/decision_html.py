"""An escalation on a portal page: the view every screen draws
(:mod:`pilothouse.decision`) as escaped HTML. Flagged words are ``<mark>``ed (their
label in the title), the rewrite's words ``<del>`` and ``<ins>``, a long text folded
around what was flagged with the whole of it one click away (``<details>``). Nothing
from a run becomes markup: every piece is redacted, then escaped."""

from __future__ import annotations

import html

from ..decision import Change, DecisionView, Segment, compact, redacted
from .html import block, para, table, text
from .markdown import Redact


def decision_html(view: DecisionView, redact: Redact) -> list[str]:
    """The escalation's parts as HTML blocks."""
    out = [
        para(f"<strong>{text(view.subject, redact)}</strong>"),
        para(f"<strong>Reason:</strong> {text(view.reason, redact)}"),
    ]
    if view.text:
        body = view.folded()
        out += [para("<strong>Checked:</strong>"), _block(marked(body, redact), "ph-checked")]
        if None in body:
            whole = _block(marked(view.segments(), redact), "ph-checked")
            out.append(f"<details><summary>The whole text</summary>{whole}</details>")
        labels = dict.fromkeys(s.label for s in view.spans if s.label)
        if labels:
            items = "".join(f"<li><mark>{text(label, redact)}</mark></li>" for label in labels)
            out.append(f'<ul class="ph-flags">{items}</ul>')
    if view.proposed_alone:
        out += [para("<strong>Proposed:</strong>"), block(view.proposed_alone, redact)]
    if view.changes:
        out += [para("<strong>Proposed change:</strong>"),
                _block(changed(compact(view.changes), redact), "ph-diff")]  # fmt: skip
    if view.sources:
        rows = [[text(s.kind, redact), text(s.ref, redact), text(s.text, redact, 240)]
                for s in view.sources]  # fmt: skip
        out += [para("<strong>Sources the step had:</strong>"),
                table(["kind", "source", "text"], rows)]  # fmt: skip
    if view.choices:
        items = "".join(
            f"<li><strong>{c.decision}</strong>: {text(c.does, redact)}</li>" for c in view.choices
        )
        out += [para("<strong>What each choice does:</strong>"),
                f'<ul class="ph-choices">{items}</ul>']  # fmt: skip
        if view.on_timeout:
            out.append(para(text(view.on_timeout, redact)))
    return out


def _block(inner: str, css: str) -> str:
    return f'<div class="ph-text {css}">{inner}</div>'


def marked(body: list[Segment | None], redact: Redact) -> str:
    """Pieces of a text as HTML, the flagged ones in ``<mark>``, redacted (see
    :func:`~pilothouse.decision.redacted`)."""
    shown = redacted(body, redact)
    if shown is None:
        return html.escape(redact("".join(s.text for s in body if s is not None)))
    out = []
    for s in shown:
        if s is None:
            out.append('<span class="ph-fold"> […] </span>')
        elif s.flagged:
            title = html.escape("; ".join(s.labels))
            out.append(f'<mark title="{title}">{html.escape(s.text)}</mark>')
        else:
            out.append(html.escape(s.text))
    return "".join(out)


def changed(diff: list[Change | None], redact: Redact) -> str:
    """A word diff as HTML: ``<del>`` removed, ``<ins>`` added."""
    out = []
    for c in diff:
        if c is None:
            out.append('<span class="ph-fold"> […] </span>')
        elif c.op == "same":
            out.append(html.escape(redact(c.text)))
        else:
            tag = "del" if c.op == "removed" else "ins"
            out.append(f"<{tag}>{html.escape(redact(c.text))}</{tag}>")
    return "".join(out)
