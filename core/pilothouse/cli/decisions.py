"""Deciding escalations: inbox, approve, reject and edit."""

from __future__ import annotations

import json

import click

from ..decision import decision_view
from .base import Context, cli, pass_context
from .decision_text import echo_decision


def _decider(obj: Context, by: str | None) -> str:
    return by or obj.settings.effective_decider()


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Decided escalations too.")
@click.option("--full", is_flag=True, help="Whole texts (long ones are folded around what"
              " was flagged).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def inbox(obj: Context, show_all: bool, full: bool, as_json: bool) -> None:
    """Escalations waiting for a person, the riskiest and newest first: why, what was
    checked with the flagged words marked, the proposed change, the sources, and what
    each choice will do."""
    store = obj.store()
    items = store.escalations(status=None if show_all else "waiting")
    if as_json:
        click.echo(json.dumps([e.model_dump() for e in items], indent=2))
        return
    if not items:
        click.echo("nothing waits for a decision")
        return
    waiting = {e.run_id for e in items if e.status == "waiting"}
    stalled = {r.id for r in store.runs_by_id(sorted(waiting)) if r.stalled}
    for e in items:
        colour = "red" if e.risk >= 0.7 else "yellow"
        state = {
            "waiting": "  [stalled run: applies when a worker resumes it]"
            if e.run_id in stalled
            else "",
            "withdrawn": f"  [withdrawn: {e.note}]",
        }.get(e.status, f"  [{e.status} by {e.decided_by}]")
        click.secho(f"{e.id}  risk {e.risk:.2f}  {e.kind}{state}", fg=colour, bold=True)
        click.echo(f"  run {e.run_id} ({e.crew}) step {e.step_id}")
        echo_decision(decision_view(e), full=full)
        if e.status == "waiting":
            click.secho(f"  decide: pilothouse approve {e.id} | edit {e.id} --text ... |"
                        f" reject {e.id} --note ...", dim=True)  # fmt: skip
        click.echo()


def _decide(obj: Context, escalation_id: str, decision: str, by: str | None, note: str,
            text: str | None) -> None:  # fmt: skip
    store = obj.store()
    decided = store.decide(escalation_id, decision, by=_decider(obj, by), note=note, text=text)
    picked_up = (
        "no process executes the run now: it applies when a worker resumes it"
        if store.get_run(decided.run_id).stalled
        else "the run picks it up within a second"
    )
    click.secho(
        f"{decided.status}: escalation {decided.id} of run {decided.run_id}"
        f" (by {decided.decided_by}); {picked_up}",
        fg="green" if decision != "reject" else "yellow",
    )


_by = click.option("--by", help="Who decides (default: the decider setting or your OS user).")


@cli.command()
@click.argument("escalation_id")
@click.option("--note", default="", help="Why.")
@_by
@pass_context
def approve(obj: Context, escalation_id: str, note: str, by: str | None) -> None:
    """Approve: the step goes on with the proposed output (or runs the tool call)."""
    _decide(obj, escalation_id, "approve", by, note, None)


@cli.command()
@click.argument("escalation_id")
@click.option("--note", required=True, help="Why (the persona sees it when sent back).")
@_by
@pass_context
def reject(obj: Context, escalation_id: str, note: str, by: str | None) -> None:
    """Reject: the run fails, or the step goes back to its persona, per the crew's rule."""
    _decide(obj, escalation_id, "reject", by, note, None)


@cli.command()
@click.argument("escalation_id")
@click.option("--text", help="The text the step goes on with (for a tool: its JSON arguments).")
@click.option("--editor", "use_editor", is_flag=True, help="Write the text in $EDITOR.")
@click.option("--note", default="", help="Why.")
@_by
@pass_context
def edit(obj: Context, escalation_id: str, text: str | None, use_editor: bool, note: str,
         by: str | None) -> None:  # fmt: skip
    """Edit: the step goes on with your text instead of the proposal."""
    if use_editor:
        proposed = obj.store().get_escalation(escalation_id).proposed or ""
        text = click.edit(proposed)
        if text is None:
            raise click.ClickException("the editor closed without saving: nothing decided")
    if text is None:
        raise click.UsageError("give --text TEXT or --editor")
    _decide(obj, escalation_id, "edit", by, note, text)
