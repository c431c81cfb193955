"""Writing run pages as HTML fragments, every piece of run data escaped.

Run pages are the bulk of a portal (one per run), so they are written as one
raw HTML block inside their Markdown file: any Markdown builder passes it
through untouched, and the portal's own builder pastes it into the theme's
page without a Markdown pass (see :mod:`pilothouse.portal.run_html`). Nothing
from a run becomes markup: text is redacted, then escaped with
:func:`html.escape` (quotes too, so it is safe in attributes).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from .markdown import Redact, one_line


def text(value: str | None, redact: Redact, limit: int | None = None) -> str:
    """``value`` on one line, redacted, cut to ``limit`` characters, escaped."""
    return html.escape(one_line(value, redact, limit))


def block(value: str | None, redact: Redact, css: str = "ph-text", role: str = "") -> str:
    """``value`` as a block that keeps its line breaks, redacted and escaped."""
    data = f' data-ph="{role}"' if role else ""
    return f'<div class="{css}"{data}>{html.escape(redact(value or ""))}</div>'


def link(label: str, href: str) -> str:
    """A link: ``label`` must already be safe HTML, ``href`` is made by the generator."""
    return f'<a href="{html.escape(href)}">{label}</a>'


def heading(level: int, label: str, anchor: str | None = None) -> str:
    """A heading with an optional id (``label`` already safe)."""
    ident = f' id="{html.escape(anchor)}"' if anchor else ""
    return f"<h{level}{ident}>{label}</h{level}>"


def para(*parts: str) -> str:
    """A paragraph of parts that are already safe HTML."""
    return f"<p>{''.join(parts)}</p>"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table of cells that are already safe HTML (empty when there are no rows)."""
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
