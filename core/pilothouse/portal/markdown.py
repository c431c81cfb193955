"""Writing untrusted text into Markdown pages so that it stays text.

Model replies, tool results, retrieved passages and user input may hold HTML,
scripts, ``javascript:`` links or Markdown tricks. Nothing of it may become
markup in the portal: inline text is turned into character references for
every character HTML or Markdown gives a meaning to. (Run pages, which hold the
longer texts, are written as escaped HTML: see :mod:`pilothouse.portal.html`.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Redact = Callable[[str], str]

# Characters that start markup in HTML or inline (Python-)Markdown, or end a
# table cell or heading, as numeric references. Others (- + . : = ! ...) only
# mean something at the start of a line, where inline text never is; fewer
# references also make the builder faster (each is an inline match).
_SPECIAL = {c: f"&#{ord(c)};" for c in "&<>\\`*_{}[]()#|"}
_TABLE = str.maketrans(_SPECIAL)


def one_line(text: str | None, redact: Redact, limit: int | None = None) -> str:
    """``text`` redacted, on one line, cut to ``limit`` characters (not escaped yet)."""
    flat = " ".join(redact(text or "").split())
    if limit is not None and len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat


def inline(text: str | None, redact: Redact, limit: int | None = None) -> str:
    """``text`` on one line, redacted and inert anywhere in Markdown (tables too)."""
    return one_line(text, redact, limit).translate(_TABLE)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table from cells that are already safe Markdown."""
    if not rows:
        return ""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def link(label: str, target: str) -> str:
    """A link to a page of the portal: ``label`` must already be safe, ``target``
    is built by the generator (never taken from run data)."""
    return f"[{label}]({target})"
