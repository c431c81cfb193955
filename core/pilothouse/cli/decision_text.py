"""An escalation in the terminal, as ``pilothouse inbox`` and ``show`` print it: the
view every screen draws (:mod:`pilothouse.decision`), its flagged words in reverse
video, the rewrite's removed words struck through and its added words in green. When
the output is not a terminal (a pipe, a file) the same marks are written as text:
«flagged», [-removed-]{+added+}."""

from __future__ import annotations

import sys

import click

from ..decision import DecisionView, compact


def styled() -> bool:
    """Whether standard output takes colours and reverse video (a terminal)."""
    return not click.utils.should_strip_ansi(sys.stdout)


def echo_decision(view: DecisionView, *, full: bool = False, indent: str = "  ") -> None:
    """Print an escalation for a person to decide: why, what was checked with the
    flagged words marked (folded around them unless ``full``), the proposed change,
    the sources, and what each choice will do."""
    ansi = styled()

    def flagged(text: str) -> str:
        return click.style(text, reverse=True, bold=True) if ansi else f"«{text}»"

    def echo(text: str = "", **style: object) -> None:
        click.echo(indent + (click.style(text, **style) if ansi and style else text))  # type: ignore[arg-type]

    echo(f"{view.subject}, risk {view.risk:.2f}")
    echo(f"reason: {view.reason}", bold=True)
    if view.text:
        echo("checked:")
        body = view.segments() if full else view.folded()
        text = "".join(
            "[…]" if s is None else flagged(s.text) if s.flagged else s.text for s in body
        )
        for line in text.splitlines() or [""]:
            echo(f"  {line}")
        if not full and None in body:
            echo("  (folded around what was flagged: --full shows all of it)", dim=True)
    for label in dict.fromkeys(s.label for s in view.spans if s.label):
        echo(f"flagged: {label}", fg="yellow")
    if view.proposed_alone:
        echo("proposed:")
        for line in view.proposed_alone.splitlines():
            echo(f"  {line}")
    if view.changes:
        diff = view.changes if full else compact(view.changes)
        shown = "".join(_change(c, ansi) for c in diff)
        echo("proposed change:")
        for line in shown.splitlines() or [""]:
            echo(f"  {line}")
    for source in view.sources:
        one = " ".join(source.text.split())
        echo(f"source {source.kind} {source.ref}: {one[:150] + ('…' if len(one) > 150 else '')}",
             dim=True)  # fmt: skip
    if view.status == "waiting":
        for choice in view.choices:
            echo(f"{choice.decision:<8} {choice.does}")
        if view.on_timeout:
            echo(view.on_timeout, dim=True)


def _change(change: object, ansi: bool) -> str:
    if change is None:
        return "[…]"
    op, text = change.op, change.text  # type: ignore[attr-defined]
    if op == "same":
        return text
    if op == "removed":
        return click.style(text, fg="red", strikethrough=True) if ansi else f"[-{text}-]"
    return click.style(text, fg="green", bold=True) if ansi else f"{{+{text}+}}"
