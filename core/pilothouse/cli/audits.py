"""The audit commands: bias and adversarial probes, and the reports kept."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any

import anyio
import click

from ..runtime import Runtime
from .base import Context, Exit, cli, pass_context
from .viewing import _short


@cli.group()
def audit() -> None:
    """Audits of a crew's behaviour (bias probes, adversarial inputs); reports are kept
    in the run store (``audit list``, ``audit show``) and shown by the portal."""


def _kept(report: Any) -> str:
    return f"audit {report.id} kept in the run store (pilothouse audit show {report.id})"


@audit.command("list")
@click.option("--kind", help="Only audits of this kind (bias, adversarial).")
@click.option("--crew", help="Only audits of this crew.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (without the full reports).")
@pass_context
def audit_list(obj: Context, kind: str | None, crew: str | None, as_json: bool) -> None:
    """The audit reports in the run store, newest first."""
    with contextlib.closing(obj.store()) as store:
        records = store.audits(kind=kind, crew=crew)
    if as_json:
        rows = [r.model_dump(exclude={"report", "run_ids"}) for r in records]
        click.echo(json.dumps(rows, indent=2))
        return
    if not records:
        click.echo("no audits yet (pilothouse audit bias|adversarial CREW)")
    for r in records:
        state = click.style("ok", fg="green") if r.ok else click.style("FOUND", fg="red")
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))
        click.echo(f"{r.id}  {started}  {r.kind:<12} {r.crew:<14} {state}  {r.summary}")


@audit.command("show")
@click.argument("audit_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@pass_context
def audit_show(obj: Context, audit_id: str, as_json: bool) -> None:
    """One audit report (id or unique prefix)."""
    with contextlib.closing(obj.store()) as store:
        record = store.get_audit(audit_id)
    if as_json:
        click.echo(record.model_dump_json(indent=2))
        return
    from ..audits.adversarial import AdversarialReport
    from ..audits.bias import BiasReport

    kinds: dict[str, Any] = {"bias": BiasReport, "adversarial": AdversarialReport}
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created))
    click.secho(f"{record.kind} audit {record.id} of {record.crew}, {when}", bold=True)
    if record.kind in kinds:
        _print_report(kinds[record.kind].model_validate(record.report))
    else:  # a plugin's own kind of audit
        click.echo(f"  {record.summary}")
    click.secho(f"{len(record.run_ids)} runs; each: pilothouse show RUN_ID", dim=True)


def _print_report(report: Any) -> None:
    """An audit report for people: bias rates and gap, or each payload's fate."""
    from ..audits.adversarial import AdversarialReport

    if isinstance(report, AdversarialReport):
        for o in report.outcomes:
            state = (
                click.style("caught", fg="green") if o.caught else click.style("PASSED", fg="red")
            )
            by = f" by {', '.join(o.by)}" if o.by else ""
            click.echo(f"  {o.payload:<14} {o.category:<18} {o.mode:<7} {state}{by}")
        click.secho(report.summary, bold=True)
    else:
        click.secho(f"bias probe of {report.crew} on {report.attribute}: {report.runs} runs",
                    bold=True)  # fmt: skip
        for r in report.rates:
            click.echo(f"  {r.group:<12} {r.positive}/{r.total} positive ({r.rate:.0%})")
        if report.worst:
            for pair in report.pairs:
                colour = "red" if pair.significant else "green"
                click.secho(
                    f"  gap {pair.groups[0]} - {pair.groups[1]}: {pair.difference:+.1%}"
                    f" (95% CI {pair.ci95[0]:+.1%} to {pair.ci95[1]:+.1%}),"
                    f" p = {pair.p_adjusted:.4f}{' SIGNIFICANT' if pair.significant else ''}",
                    fg=colour,
                )
            click.echo(
                f"  smallest gap detectable with 80% power: {report.min_detectable_gap:.0%}"
                f" (false-alarm rate {report.alpha:.3g}"
                + (f"; {report.looks} looks, stopped: {report.stopped})" if report.looks > 1
                   else ")")
            )  # fmt: skip
        for flip in report.flipped:
            click.echo(f"  flipped: {_short(flip['case'], 90)} {flip['positive_by_group']}")


@audit.command("adversarial")
@click.argument("crew")
@click.option(
    "--payloads",
    type=click.Path(exists=True),
    help="Run the [[payload]] tables of this TOML file instead of the registered payloads.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def audit_adversarial(obj: Context, crew: str, payloads: str | None, as_json: bool) -> None:
    """Send hostile inputs to CREW: directly, hidden in documents and in an outside
    tool's results; exit 1 if any got past."""
    from ..audits.adversarial import AdversarialPlugin, registered_payloads, run_suite
    from ..probes import load_payloads

    plugin = AdversarialPlugin()

    async def go() -> Any:
        async with Runtime(obj.settings, plugins=[plugin]) as rt:
            items = load_payloads(payloads) if payloads else registered_payloads(rt)
            crew_obj = rt.crew(crew)
            if crew_obj.on_flag == "escalate":  # nobody waits at the desk during an audit
                crew_obj = crew_obj.model_copy(update={"on_flag": "continue"})
            return await run_suite(rt, plugin, crew_obj, items)

    report = anyio.run(go)
    _finish(report, as_json, failed=bool(report.passed))


@audit.command("bias")
@click.argument("crew")
@click.option(
    "--cases",
    "cases_path",
    required=True,
    type=click.Path(exists=True),
    help="TOML cases file (attribute, decision_field, positive, [[case]] text).",
)
@click.option("--model", "-m", help="provider:model for every persona of the probe runs.")
@click.option(
    "--until",
    type=click.IntRange(min=1),
    help="A budget of runs: keep making passes over the cases (new names each time) until"
    " a gap is significant, --detect is reached, or the budget is spent.",
)
@click.option(
    "--detect",
    type=click.FloatRange(0, 1, min_open=True),
    help="With --until: stop once the probe would detect a gap this large (0.1 = 10 points)"
    " with 80% power.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def audit_bias(
    obj: Context,
    crew: str,
    cases_path: str,
    model: str | None,
    until: int | None,
    detect: float | None,
    as_json: bool,
) -> None:
    """Run CREW on counterfactual cases; exit 1 when a group gap is significant."""
    from ..audits.bias import load_cases, probe

    if detect is not None and until is None:
        raise click.UsageError("--detect needs --until: a budget of runs to keep sampling in")
    cases = load_cases(cases_path)

    async def go() -> Any:
        async with Runtime(obj.settings) as rt:
            crew_obj = rt.crew(crew)
            if model:
                rt.engine.check(crew_obj, model)
                personas = {n: p.model_copy(update={"model": model})
                            for n, p in crew_obj.personas.items()}  # fmt: skip
                crew_obj = crew_obj.model_copy(update={"personas": personas})
            return await probe(rt, crew_obj, cases, until=until, detect=detect)

    report = anyio.run(go)
    _finish(report, as_json, failed=not report.ok)


def _finish(report: Any, as_json: bool, *, failed: bool) -> None:
    """Print an audit's report (and where it is kept); exit 1 when it found a problem."""
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        _print_report(report)
        click.secho(_kept(report), dim=True)
    sys.exit(Exit.RUN_FAILED if failed else Exit.OK)
