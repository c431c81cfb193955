"""Reading the log: runs, show and metrics."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ..decision import decision_view
from ..events import STATUS_COLOURS, UNFINISHED_STATUSES
from .base import Context, cli, pass_context
from .decision_text import echo_decision


def _age(ts: float) -> str:
    seconds = max(0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@cli.command()
@click.option("--status", type=click.Choice(list(STATUS_COLOURS)), help="Only runs in this status.")
@click.option("--crew", help="Only runs of this crew.")
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="How many runs.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def runs(obj: Context, status: str | None, crew: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first ('stalled': unfinished, and no process executes them)."""
    store = obj.store()
    if status == "stalled":
        unfinished = [r for s in UNFINISHED_STATUSES
                      for r in store.list_runs(status=s, crew=crew, limit=limit)]  # fmt: skip
        found = sorted((r for r in unfinished if r.stalled), key=lambda r: -r.created)[:limit]
    else:
        found = store.list_runs(status=status, crew=crew, limit=limit)
    if as_json:
        click.echo(json.dumps([r.model_dump() for r in found], indent=2))
        return
    if not found:
        click.echo("no runs")
        return
    click.secho(
        f"{'run':<13}{'crew':<16}{'status':<19}{'steps':>5}{'tokens':>8}  age  input", bold=True
    )
    for r in found:
        shown = r.shown_status
        snippet = " ".join(r.input.split())[:40]
        click.echo(
            f"{r.id:<13}{r.crew[:15]:<16}"
            + click.style(f"{shown:<19}", fg=STATUS_COLOURS.get(shown, "white"))
            + f"{r.steps:>5}{r.input_tokens + r.output_tokens:>8}  {_age(r.created):>3}  {snippet}"
        )
    if any(r.stalled for r in found):
        click.secho(STALLED_HINT, dim=True)


#: what to do about a run no process executes
STALLED_HINT = (
    "stalled: no process executes the run any more; 'pilothouse worker' or"
    " 'pilothouse resume --all' carries it on"
)


def _short(text: str | None, width: int = 100) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _timeline_line(e: Any) -> str | None:
    t = e.type
    if t == "retrieval":
        refs = ", ".join(f"{p.id} {p.score:.2f}" for p in e.passages)
        return f"retrieval {e.retriever}: {len(e.passages)} passages ({refs})"
    if t == "context_built":
        kinds = ", ".join(f"{p.kind}:{p.ref or p.source}" for p in e.pieces)
        return f"context ~{e.tokens} tokens: {kinds}"
    if t == "model_call":
        label = " (offline)" if e.offline else ""
        if e.error:
            return f"model {e.model}{label} failed after {e.latency_ms:.0f} ms: {e.error}"
        what = f"{len(e.tool_calls)} tool call(s)" if e.tool_calls else "answer"
        if e.stop_note:
            what += f" ({e.stop_note})"
        if e.output_mode:
            what += f" [schema as {e.output_mode}]"
        queued = f" ({e.queue_note})" if e.queue_note else ""
        # the server's own id of the call (a remote agent's task): what its logs know
        ref = f" [{e.request_id}]" if e.request_id else ""
        return (
            f"model {e.model}{label}{ref}: {e.usage.input_tokens} in / {e.usage.output_tokens}"
            f" out, {e.latency_ms:.1f} ms{queued} -> {what}"
        )
    if t == "tool_call":
        outcome = f"error: {e.error}" if e.error else _short(e.result, 60)
        if e.withheld_by:
            outcome = f"withheld by {e.withheld_by}: {outcome}"
        where = f" [{e.source}]" if e.source and ":" in e.source else ""
        return (
            f"tool {e.tool}{where}({_short(e.arguments, 60)}) {e.duration_ms:.0f} ms -> {outcome}"
        )
    if t == "guardrail":
        passage = e.details.get("passage") if isinstance(e.details, dict) else None
        where = f"{e.stage}, passage {passage}" if passage else e.stage
        return f"guardrail {e.guardrail} ({where}): {e.action} {e.reason}".rstrip()
    if t == "handoff":
        return f"handoff {e.source} -> {e.target}"
    if t == "model_switched":
        return f"model {e.failed} failed, switched to {e.next}: {_short(e.reason, 80)}"
    if t == "escalation_raised":
        return f"escalation {e.escalation_id} ({e.kind})"
    if t == "escalation_decided":
        note = f": {e.note}" if e.note else ""
        return f"decided {e.decision} by {e.by}{note}"
    if t == "run_resumed":
        return f"resumed ({len(e.completed_steps)} steps already done)"
    if t == "run_suspended":
        return f"suspended: {e.reason} (to be resumed)"
    if t == "output_explained":
        why = ", ".join(f"{a.kind}:{a.ref} {a.score:.2f}" for a in e.evidence[:5])
        return f"why: {why}"
    if t == "step_finished":
        return f"output: {_short(e.output)}"
    if t == "limit_hit":
        return f"LIMIT {e.limit}: {e.message}"
    if t == "error":
        plugin = f" in plugin {e.plugin}" if e.plugin else ""
        return f"ERROR {e.error_type}{plugin}: {e.message}"
    return None


@cli.command()
@click.argument("run_id")
@click.option("--full", is_flag=True, help="Escalations' whole texts (long ones are folded).")
@click.option("--json", "as_json", is_flag=True, help="Print the run's events as JSON.")
@pass_context
def show(obj: Context, run_id: str, full: bool, as_json: bool) -> None:
    """Show one run's step timeline (RUN_ID may be a unique prefix)."""
    store = obj.store()
    summary = store.get_run(run_id)
    events = store.events(summary.id)
    if as_json:
        payload = {
            "run": summary.model_dump(),
            "events": [e.model_dump(mode="json") for e in events],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    shown = summary.shown_status
    click.secho(f"run {summary.id}  crew {summary.crew}  ", bold=True, nl=False)
    click.secho(shown, fg=STATUS_COLOURS.get(shown, "white"), bold=True)
    if summary.stalled:
        click.secho(STALLED_HINT, dim=True)
    click.echo(
        f"{summary.steps} steps, {summary.input_tokens} in / {summary.output_tokens} out tokens,"
        f" ${summary.cost_usd:.4f}"
    )
    click.echo(f"input: {_short(summary.input, 200)}")
    labels = next((e.labels for e in events if e.type == "run_started"), {})  # type: ignore[attr-defined]
    if labels:
        click.echo("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    for e in events:
        if e.type == "step_started":
            label = " (offline)" if e.model.startswith("offline:") else ""  # type: ignore[attr-defined]
            click.secho(f"\nstep {e.step_id}  {e.persona}  {e.model}{label}", bold=True)  # type: ignore[attr-defined]
            continue
        line = _timeline_line(e)
        if line is not None:
            fg = "red" if e.type in ("error", "limit_hit") else None
            click.secho(f"  {line}", fg=fg)
        if e.type == "escalation_raised":
            echo_decision(decision_view(e), full=full, indent="    ")
    if summary.output is not None:
        click.secho("\nfinal output:", bold=True)
        click.echo(summary.output)
    if summary.error:
        click.secho(f"\nfailed ({summary.error_kind}): {summary.error}", fg="red")


def _since(value: str | None) -> float | None:
    """``7d``, ``12h``, ``30m`` ago, or an ISO date; None for all time."""
    if not value:
        return None
    units = {"d": 86400, "h": 3600, "m": 60}
    if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[:-1]) * units[value[-1]]
    import datetime

    try:
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(f"{value!r}: use 7d, 12h, 30m or a date like 2026-11-01") from None


@cli.command()
@click.option("--by", "by", type=click.Choice(["crew", "persona", "model", "day"]), default="crew",
              show_default=True, help="How to group the numbers.")  # fmt: skip
@click.option("--crew", help="Only this crew.")
@click.option("--since", help="Only runs since: 7d, 12h, 30m or an ISO date.")
@click.option("--audits", is_flag=True, help="Count the runs audits made too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def metrics(
    obj: Context, by: str, crew: str | None, since: str | None, audits: bool, as_json: bool
) -> None:
    """LLM-ops numbers: runs, success/error/escalation/override rates, model calls and
    how many failed (c.err), tokens, cost, latency (q p95: of it, waiting for the
    endpoint's own limits)."""
    from ..audits.metrics import budget_alerts, compute

    store = obj.store()  # a clear error when there is no run store
    try:
        rows = compute(store, by=by, crew=crew, since=_since(since), audits=audits)  # type: ignore[arg-type]
        alerts = budget_alerts(store, obj.settings.budgets)
    finally:
        store.close()
    for alert in alerts:
        click.secho(f"budget alert: {alert}", fg="red", err=True)
    if as_json:
        click.echo(json.dumps([m.as_dict() for m in rows], indent=2))
        return
    if not rows:
        click.echo("no runs")
        return

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    # as wide as the longest name (a crew/persona key cut short names nobody), within reason
    width = min(max(len(by), *(len(m.group) for m in rows)) + 1, 48)
    click.secho(
        f"{by:<{width}}{'runs':>6}{'ok':>6}{'err':>6}{'esc':>6}{'ovr':>6}{'calls':>7}{'c.err':>6}"
        f"{'tokens':>9}{'tok/ok':>8}{'cost $':>9}{'p50 ms':>8}{'p95 ms':>8}{'q p95':>7}",
        bold=True,
    )
    for m in rows:
        tokens = m.input_tokens + m.output_tokens
        per = "-" if m.tokens_per_success is None else f"{m.tokens_per_success:.0f}"
        p50 = "-" if m.latency_p50_ms is None else f"{m.latency_p50_ms:.0f}"
        p95 = "-" if m.latency_p95_ms is None else f"{m.latency_p95_ms:.0f}"
        q95 = "-" if m.queued_p95_ms is None else f"{m.queued_p95_ms:.0f}"
        runs = m.runs if by in ("crew", "day") else "-"
        click.echo(
            f"{m.group[: width - 1]:<{width}}{runs:>6}{pct(m.success_rate):>6}"
            f"{pct(m.error_rate):>6}{pct(m.escalation_rate):>6}{pct(m.override_rate):>6}{m.model_calls:>7}"
            f"{pct(m.call_error_rate):>6}{tokens:>9}{per:>8}{m.cost_usd:>9.4f}{p50:>8}{p95:>8}"
            f"{q95:>7}"
        )
    click.secho(METRICS_LEGEND, dim=True)


#: what the columns of ``pilothouse metrics`` mean
METRICS_LEGEND = "\n".join(
    [
        "ok, err: runs that succeeded, failed, of those that ended · esc: runs that paused for"
        " a person",
        "ovr: a person's decisions that edited or rejected (not approved) · calls, c.err: model"
        " calls, the share that failed after retries",
        "tok/ok: tokens per successful run · p50, p95: model latency · q p95: of it, the wait"
        ' for the endpoint\'s own limits ("-": nothing to count)',
    ]
)
