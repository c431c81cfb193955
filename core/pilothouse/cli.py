"""The ``pilothouse`` command: a thin layer over :class:`pilothouse.Runtime` and the run store.

Exit codes: 0 success; 1 the run failed; 2 bad usage; 3 bad config, crew
file, plugin or unknown name; 4 a limit of the crew stopped the run; 5 a
guardrail blocked the run; 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import time
from enum import IntEnum
from pathlib import Path
from typing import Any

import anyio
import click

from .engine import RunResult
from .errors import PilothouseError
from .events import STATUS_COLOURS, BaseEvent
from .runtime import Runtime
from .settings import Settings, load_settings
from .sqlite_store import SQLiteRunStore
from .store import RunStore

DEMO_INPUT = (
    "Plan the launch campaign for the Helio 30 solar backpack: day hikers who need their"
    " phone charged on the trail"
)


class Exit(IntEnum):
    """What the command's exit status means."""

    OK = 0
    RUN_FAILED = 1
    USAGE = 2
    CONFIG = 3
    LIMIT = 4
    BLOCKED = 5
    INTERRUPTED = 130


class Context:
    """What every command shares: settings, loaded once."""

    def __init__(self, workspace: str | None) -> None:
        self.workspace = workspace
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The effective settings (loaded on first use, so --help stays fast)."""
        if self._settings is None:
            self._settings = load_settings(workspace=self.workspace)
        return self._settings

    def store(self) -> RunStore:
        """The workspace's run store; a clear error when no run was made yet."""
        path = self.settings.store_path
        if not path.exists():
            raise click.ClickException(
                f"no run store at {path}: no run has been made in this workspace yet"
                " (try 'pilothouse demo')"
            )
        return SQLiteRunStore(path)


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--workspace",
    "-w",
    envvar="PILOTHOUSE_WORKSPACE",
    help="Workspace folder (default .pilothouse).",
)
@click.version_option(package_name="pilothouse")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None) -> None:
    """pilothouse: run fleets of LLM agents and watch them from the pilothouse."""
    logging.basicConfig(level=logging.WARNING, format="pilothouse: %(message)s", stream=sys.stderr)
    ctx.obj = Context(workspace)


# -- running ---------------------------------------------------------------------


def _progress(quiet: bool) -> Any:
    def show(event: BaseEvent) -> None:
        if quiet:
            return
        t = event.type
        if t == "step_started":
            offline = " (offline)" if event.model.startswith("offline:") else ""  # type: ignore[attr-defined]
            click.secho(
                f"  step {event.step_id:<5} {event.persona:<18} {event.model}{offline}",  # type: ignore[attr-defined]
                err=True,
                dim=True,
            )
        elif t == "tool_call":
            status = "error" if event.error else "ok"  # type: ignore[attr-defined]
            click.secho(f"           tool {event.tool} {status}", err=True, dim=True)  # type: ignore[attr-defined]
        elif t == "guardrail" and event.action != "pass":  # type: ignore[attr-defined]
            colour = {"fix": "blue", "flag": "yellow", "block": "red"}[event.action]  # type: ignore[attr-defined]
            click.secho(
                f"           guardrail {event.guardrail}: {event.action} {event.reason}",  # type: ignore[attr-defined]
                err=True,
                fg=colour,
            )
        elif t == "handoff":
            click.secho(f"           handoff -> {event.target}", err=True, dim=True)  # type: ignore[attr-defined]
        elif t == "escalation_raised":
            e: Any = event
            click.secho(
                f"  waiting for a person: escalation {e.escalation_id} ({e.kind}, risk"
                f" {e.risk:.2f}): {e.reason}\n"
                f"    decide with: pilothouse approve {e.escalation_id}"
                f" | pilothouse edit {e.escalation_id} --text ..."
                f" | pilothouse reject {e.escalation_id} --note ...",
                err=True,
                fg="yellow",
            )
        elif t == "escalation_decided":
            e = event
            click.secho(f"  decided: {e.decision} by {e.by}", err=True, fg="yellow")
        elif t == "limit_hit":
            click.secho(f"  limit {event.limit}: {event.message}", err=True, fg="red")  # type: ignore[attr-defined]

    return show


def _exit_code(result: RunResult) -> Exit:
    if result.ok:
        return Exit.OK
    if result.status == "cancelled":
        return Exit.INTERRUPTED
    return {"limit": Exit.LIMIT, "guardrail": Exit.BLOCKED}.get(
        result.error_kind or "", Exit.RUN_FAILED
    )


def _start(
    obj: Context,
    crew: str,
    text: str,
    model: str | None,
    quiet: bool,
    as_json: bool,
    wait: float | None = None,
    subject: str | None = None,
) -> None:
    async def go() -> RunResult:
        async with Runtime(obj.settings) as rt:
            rt.subscribe(_progress(quiet or as_json))
            if not (quiet or as_json):
                click.secho(f"run {crew}", err=True, bold=True)
            crew_obj = rt.crew(crew)
            if wait is not None:
                rules = crew_obj.escalation.model_copy(update={"timeout_s": wait})
                crew_obj = crew_obj.model_copy(update={"escalation": rules})
            return await rt.run(crew_obj, text, model=model, subject=subject)

    result = anyio.run(go)
    if as_json:
        click.echo(json.dumps(result.__dict__, indent=2))
    else:
        colour = STATUS_COLOURS.get(result.status, "white")
        click.secho(
            f"{result.status}: run {result.run_id} ({result.crew}) {result.steps} steps,"
            f" {result.input_tokens + result.output_tokens} tokens, ${result.cost_usd:.4f}",
            fg=colour,
            err=True,
        )
        if result.output is not None:
            click.echo(result.output)
        if result.error:
            click.secho(f"error ({result.error_kind}): {result.error}", fg="red", err=True)
        click.secho(
            f"log: {obj.settings.store_path}  (pilothouse show {result.run_id})", err=True, dim=True
        )
    sys.exit(_exit_code(result))


@cli.command()
@click.argument("crew")
@click.option(
    "--input", "-i", "text", required=True, help="The run's input text ('-' reads stdin)."
)
@click.option("--model", "-m", help="provider:model or alias used by every persona of this run.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the final output.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--detach", is_flag=True, help="Queue the run for 'pilothouse worker' and return.")
@click.option("--subject", "-s", help="Whom the run is about: its memory is recalled and kept.")
@pass_context
def run(obj: Context, crew: str, text: str, model: str | None, quiet: bool, as_json: bool,
        detach: bool, subject: str | None) -> None:  # fmt: skip
    """Run CREW (a name or a crew file) on one input."""
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():  # an empty shell variable, an empty file: every persona would run on it
        raise click.UsageError("the input is empty: give --input TEXT (or '-' with text on stdin)")
    if detach:
        rt = Runtime(obj.settings)
        try:
            run_id = rt.queue(crew, text, model=model, subject=subject)
        finally:
            if rt.store is not None:
                rt.store.close()
        click.echo(json.dumps({"run_id": run_id, "status": "queued"}) if as_json else run_id)
        return
    _start(obj, crew, text, model, quiet, as_json, subject=subject)


@cli.command()
@click.option("--concurrency", "-c", default=4, show_default=True, help="Runs at once.")
@click.option("--once", is_flag=True, help="Stop when nothing is queued or unfinished.")
@pass_context
def worker(obj: Context, concurrency: int, once: bool) -> None:
    """Resume unfinished runs, then take queued runs ('run --detach') as they come.

    Ctrl+C or SIGTERM stops the worker, not the work: its runs are suspended where
    they are and the next worker resumes them (a second signal exits at once).
    """
    done: int | None = None  # stays None when a signal stopped the worker

    async def go() -> None:
        nonlocal done
        async with Runtime(obj.settings) as rt, anyio.create_task_group() as tg:
            rt.subscribe(_progress(False))

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        left = rt.suspend(f"worker stopped ({signal.Signals(signum).name})")
                        click.secho(f"worker: stopping; {len(left)} run(s) suspended for the"
                                    " next worker to resume", err=True)  # fmt: skip
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            done = await rt.work(concurrency=concurrency, once=once)
            tg.cancel_scope.cancel()

    anyio.run(go)
    if done is not None:
        click.secho(f"worker: {done} run(s) done", err=True)


@cli.command()
@click.option("--input", "-i", "text", default=DEMO_INPUT, show_default=False, help="Demo input.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--wait",
    type=float,
    default=15,
    show_default=True,
    help="Seconds to wait for a person's decision before the proposed text is approved.",
)
@pass_context
def demo(obj: Context, text: str, as_json: bool, wait: float) -> None:
    """Run the bundled marketing crew offline (no key, no network).

    The compliance persona flags a risky claim: decide it from another terminal
    (pilothouse inbox / approve / edit / reject) or let the wait run out.
    """
    if not as_json:
        click.secho(
            "pilothouse demo: researcher -> analyst -> creative -> compliance on the offline model",
            err=True,
        )
    _start(obj, "marketing", text, "offline", False, as_json, wait)


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def replay(obj: Context, run_id: str, as_json: bool) -> None:
    """Re-run RUN_ID offline from its recording and report where it diverges.

    Model replies and tool results come from the run's log; the crew, its
    personas and guardrails are today's. Exit 0 when identical, 1 otherwise.
    """
    from .replay import replay as replay_run

    obj.store().close()  # a clear error when there is no run store
    report = anyio.run(replay_run, run_id, obj.settings)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "original": report.original,
                    "replay": report.replay.run_id,
                    "identical": report.identical,
                    "steps": report.steps,
                    "served": report.served,
                    "diverged_at": report.diverged_at,
                    "reason": report.reason,
                },
                indent=2,
            )
        )
    elif report.identical:
        click.secho(
            f"identical: replay {report.replay.run_id} of run {report.original} matched all"
            f" {report.steps} steps ({report.served} model calls served from the recording)",
            fg="green",
        )
    else:
        where = f"at step {report.diverged_at}" if report.diverged_at else "at the end"
        click.secho(
            f"diverged {where}: {report.reason} (replay {report.replay.run_id} of run"
            f" {report.original})",
            fg="red",
        )
    sys.exit(Exit.OK if report.identical else Exit.RUN_FAILED)


# -- reading the log ---------------------------------------------------------------


def _age(ts: float) -> str:
    seconds = max(0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@cli.command()
@click.option("--status", type=click.Choice(list(STATUS_COLOURS)), help="Only runs in this status.")
@click.option("--crew", help="Only runs of this crew.")
@click.option("--limit", "-n", default=50, show_default=True, help="How many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def runs(obj: Context, status: str | None, crew: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first ('stalled': unfinished, and no process executes them)."""
    store = obj.store()
    if status == "stalled":
        unfinished = [r for s in ("running", "waiting_for_human")
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
        return (
            f"model {e.model}{label}: {e.usage.input_tokens} in / {e.usage.output_tokens} out,"
            f" {e.latency_ms:.1f} ms -> {what}"
        )
    if t == "tool_call":
        outcome = f"error: {e.error}" if e.error else _short(e.result, 60)
        return f"tool {e.tool}({_short(e.arguments, 60)}) -> {outcome}"
    if t == "guardrail":
        return f"guardrail {e.guardrail} ({e.stage}): {e.action} {e.reason}".rstrip()
    if t == "handoff":
        return f"handoff {e.source} -> {e.target}"
    if t == "model_switched":
        return f"model {e.failed} failed, switched to {e.next}: {_short(e.reason, 80)}"
    if t == "escalation_raised":
        return f"escalation {e.escalation_id} ({e.kind}, risk {e.risk:.2f}): {e.reason}"
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
@click.option("--json", "as_json", is_flag=True, help="Print the run's events as JSON.")
@pass_context
def show(obj: Context, run_id: str, as_json: bool) -> None:
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
    for e in events:
        if e.type == "step_started":
            label = " (offline)" if e.model.startswith("offline:") else ""  # type: ignore[attr-defined]
            click.secho(f"\nstep {e.step_id}  {e.persona}  {e.model}{label}", bold=True)  # type: ignore[attr-defined]
            continue
        line = _timeline_line(e)
        if line is not None:
            fg = "red" if e.type in ("error", "limit_hit") else None
            click.secho(f"  {line}", fg=fg)
    if summary.output is not None:
        click.secho("\nfinal output:", bold=True)
        click.echo(summary.output)
    if summary.error:
        click.secho(f"\nfailed ({summary.error_kind}): {summary.error}", fg="red")


@cli.command()
@click.argument("run_id", required=False)
@click.option("--all", "resume_all", is_flag=True, help="Every run that was running or waiting.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@pass_context
def resume(obj: Context, run_id: str | None, resume_all: bool, as_json: bool) -> None:
    """Continue RUN_ID (or --all) from its last completed step after a crash."""
    if bool(run_id) == resume_all:
        raise click.UsageError("give a RUN_ID or --all")
    obj.store().close()  # a clear error when there is no run store

    async def go() -> list[RunResult]:
        async with Runtime(obj.settings) as rt:
            rt.subscribe(_progress(as_json))
            if run_id:
                return [await rt.resume(run_id)]
            ids = rt.unfinished()
            results: list[RunResult] = []

            async def one(i: str) -> None:
                try:
                    results.append(await rt.resume(i))
                except PilothouseError as exc:  # one bad run does not stop the others
                    click.secho(f"run {i}: {exc}", fg="red", err=True)

            async with anyio.create_task_group() as tg:
                for i in ids:
                    tg.start_soon(one, i)
            return results

    results = anyio.run(go)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in results], indent=2))
    elif not results:
        click.echo("nothing to resume")
    for r in results:
        if not as_json:
            colour = STATUS_COLOURS.get(r.status, "white")
            click.secho(f"{r.status}: run {r.run_id} ({r.crew})", fg=colour)
    worst = max((_exit_code(r) for r in results), default=Exit.OK)
    sys.exit(worst)


@cli.command()
@click.argument("run_id")
@pass_context
def cancel(obj: Context, run_id: str) -> None:
    """Cancel a run: the process executing it stops it and logs why."""
    store = obj.store()
    summary = store.request_cancel(run_id)
    if summary.status == "cancelled":
        click.secho(f"cancelled: run {summary.id} ({summary.crew})", fg="magenta")
    else:
        click.secho(
            f"cancel requested: run {summary.id} stops within a second if a process is"
            " running it, or when it is resumed",
            fg="magenta",
        )


# -- people on the loop -------------------------------------------------------------


def _decider(obj: Context, by: str | None) -> str:
    if by:
        return by
    if obj.settings.decider:
        return obj.settings.decider
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers)
        return "unknown"


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Decided escalations too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def inbox(obj: Context, show_all: bool, as_json: bool) -> None:
    """Escalations waiting for a person, the riskiest and newest first."""
    store = obj.store()
    items = store.escalations(status=None if show_all else "waiting")
    if as_json:
        click.echo(json.dumps([e.model_dump() for e in items], indent=2))
        return
    if not items:
        click.echo("nothing waits for a decision")
        return
    for e in items:
        colour = "red" if e.risk >= 0.7 else "yellow"
        state = {"waiting": "", "withdrawn": f"  [withdrawn: {e.note}]"}.get(
            e.status, f"  [{e.status} by {e.decided_by}]"
        )
        click.secho(f"{e.id}  risk {e.risk:.2f}  {e.kind}{state}", fg=colour, bold=True)
        click.echo(f"  run {e.run_id} ({e.crew}) step {e.step_id} {e.persona}: {e.reason}")
        if e.evidence:
            click.echo(f"  evidence: {_short(json.dumps(e.evidence), 160)}")
        if e.proposed is not None:
            click.echo(f"  proposed: {_short(e.proposed, 160)}")


def _decide(obj: Context, escalation_id: str, decision: str, by: str | None, note: str,
            text: str | None) -> None:  # fmt: skip
    store = obj.store()
    decided = store.decide(escalation_id, decision, by=_decider(obj, by), note=note, text=text)
    click.secho(
        f"{decided.status}: escalation {decided.id} of run {decided.run_id}"
        f" (by {decided.decided_by}); the run picks it up within a second",
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
    """LLM-ops numbers: runs, success/error/escalation/override rates, tokens, cost, latency."""
    from .metrics import budget_alerts, compute

    obj.store().close()  # a clear error when there is no run store
    rows = compute(obj.settings.store_path, by=by, crew=crew, since=_since(since), audits=audits)  # type: ignore[arg-type]
    for alert in budget_alerts(obj.settings.store_path, obj.settings.budgets):
        click.secho(f"budget alert: {alert}", fg="red", err=True)
    if as_json:
        click.echo(json.dumps([m.as_dict() for m in rows], indent=2))
        return
    if not rows:
        click.echo("no runs")
        return

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    click.secho(
        f"{by:<22}{'runs':>6}{'ok':>6}{'err':>6}{'esc':>6}{'ovr':>6}{'calls':>7}{'tokens':>9}"
        f"{'tok/ok':>8}{'cost $':>9}{'p50 ms':>8}{'p95 ms':>8}",
        bold=True,
    )
    for m in rows:
        tokens = m.input_tokens + m.output_tokens
        per = "-" if m.tokens_per_success is None else f"{m.tokens_per_success:.0f}"
        p50 = "-" if m.latency_p50_ms is None else f"{m.latency_p50_ms:.0f}"
        p95 = "-" if m.latency_p95_ms is None else f"{m.latency_p95_ms:.0f}"
        runs = m.runs if by in ("crew", "day") else "-"
        click.echo(
            f"{m.group[:21]:<22}{runs:>6}{pct(m.success_rate):>6}{pct(m.error_rate):>6}"
            f"{pct(m.escalation_rate):>6}{pct(m.override_rate):>6}{m.model_calls:>7}{tokens:>9}"
            f"{per:>8}{m.cost_usd:>9.4f}{p50:>8}{p95:>8}"
        )


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
    from .adversarial import AdversarialReport
    from .bias import BiasReport

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
    from .adversarial import AdversarialReport

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
            w = report.worst
            colour = "red" if w.significant else "green"
            click.secho(
                f"  largest gap {w.groups[0]} - {w.groups[1]}: {w.difference:+.1%}"
                f" (95% CI {w.ci95[0]:+.1%} to {w.ci95[1]:+.1%}), p = {w.p_value:.4f}"
                f"{' SIGNIFICANT' if w.significant else ''}",
                fg=colour,
            )
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
    """Send hostile inputs to CREW, directly and hidden in documents; exit 1 if any got past."""
    from .adversarial import AdversarialPlugin, registered_payloads, run_suite
    from .probes import load_payloads

    plugin = AdversarialPlugin()

    async def go() -> Any:
        async with Runtime(obj.settings, plugins=[plugin]) as rt:
            items = load_payloads(payloads) if payloads else registered_payloads(rt)
            crew_obj = rt.crew(crew)
            if crew_obj.on_flag == "escalate":  # nobody waits at the desk during an audit
                crew_obj = crew_obj.model_copy(update={"on_flag": "continue"})
            return await run_suite(rt, plugin, crew_obj, items)

    report = anyio.run(go)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        _print_report(report)
        click.secho(_kept(report), dim=True)
    sys.exit(Exit.RUN_FAILED if report.passed else Exit.OK)


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
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def audit_bias(obj: Context, crew: str, cases_path: str, model: str | None, as_json: bool) -> None:
    """Run CREW on counterfactual cases; exit 1 when a group gap is significant."""
    from .bias import load_cases, probe

    cases = load_cases(cases_path)

    async def go() -> Any:
        async with Runtime(obj.settings) as rt:
            crew_obj = rt.crew(crew)
            if model:
                rt.engine.check(crew_obj, model)
                personas = {n: p.model_copy(update={"model": model})
                            for n, p in crew_obj.personas.items()}  # fmt: skip
                crew_obj = crew_obj.model_copy(update={"personas": personas})
            return await probe(rt, crew_obj, cases)

    report = anyio.run(go)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        _print_report(report)
        click.secho(_kept(report), dim=True)
    sys.exit(Exit.RUN_FAILED if report.worst and report.worst.significant else Exit.OK)


# -- the installation ----------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def plugins(obj: Context, as_json: bool) -> None:
    """List every plugin and what it registered."""
    rt = Runtime(obj.settings, log_events=False)
    infos = list(rt.plugins.info.values())
    if as_json:
        click.echo(json.dumps([info.__dict__ for info in infos], indent=2))
        return
    for info in infos:
        state = click.style("ok", fg="green") if info.loaded else click.style("FAILED", fg="red")
        click.echo(
            f"{click.style(info.name, bold=True)}  [{state}]  {info.module}  ({info.source})"
        )
        for kind, names in info.registered.items():
            click.echo(f"    {kind}: {', '.join(names)}")
        if info.error:
            click.secho(f"    error: {info.error}", fg="red")


@cli.command()
@click.option("--serve", is_flag=True, help="Serve the monitor to a browser (textual-serve).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address --serve binds.")
@click.option("--port", default=8765, show_default=True, help="Port --serve listens on.")
@click.option("--window", type=click.Choice(["15m", "1h", "24h", "7d"]), default="1h",
              show_default=True, help="Time window of the header's numbers.")  # fmt: skip
@pass_context
def tui(obj: Context, serve: bool, host: str, port: int, window: str) -> None:
    """The monitor: live runs, exceptions and the escalation inbox (needs pilothouse[tui])."""
    try:
        from .tui import Feed, MonitorApp
    except ImportError as exc:
        raise click.ClickException(
            f"the monitor needs Textual: pip install 'pilothouse[tui]' ({exc})"
        ) from exc
    settings = obj.settings
    if serve:
        try:
            from textual_serve.server import Server
        except ImportError as exc:
            raise click.ClickException(
                f"--serve needs textual-serve: pip install 'pilothouse[serve]' ({exc})"
            ) from exc
        import shlex

        command = shlex.join([sys.executable, "-m", "pilothouse", "--workspace",
                              str(settings.workspace), "tui", "--window", window])  # fmt: skip
        click.secho(f"monitor on http://{host}:{port} (ctrl+c stops)", err=True)
        Server(command, host=host, port=port, title="pilothouse").serve()
        return
    from .redact import Redactor

    app = MonitorApp(
        Feed(settings.store_path),
        redact=Redactor.from_settings(settings),
        decider=_decider(obj, None),
        window=window,
    )
    app.run()


@cli.group()
def portal() -> None:
    """The audit portal: a static site made from the run log (needs pilothouse[portal])."""


def _portal_out(obj: Context, out: str | None) -> Path:
    return Path(out) if out else obj.settings.workspace / "portal"


# -- memory ---------------------------------------------------------------------------


@cli.group(invoke_without_command=True)
@click.option("--subject", "-s", help="Only this subject's facts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def memory(ctx: click.Context, subject: str | None, as_json: bool) -> None:
    """Facts kept per subject across runs (list them; 'memory forget' deletes)."""
    if ctx.invoked_subcommand is not None:
        return
    items = ctx.obj.store().memories(subject, limit=10_000)
    if as_json:
        click.echo(json.dumps([m.model_dump() for m in items], indent=2))
        return
    if not items:
        click.echo("nothing remembered" + (f" about {subject}" if subject else ""))
        return
    for m in items:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(m.created))
        click.echo(f"{m.id}  {m.subject:<16} {m.channel:<6} {when}  {_short(m.fact, 70)}"
                   f"  (run {m.run_id} {m.persona})")  # fmt: skip


@memory.command("forget")
@click.argument("memory_id", required=False)
@click.option("--subject", "-s", help="Forget every fact about this subject.")
@pass_context
def memory_forget(obj: Context, memory_id: str | None, subject: str | None) -> None:
    """Delete one fact (by id) or all facts about a subject (the log keeps the events)."""
    if bool(memory_id) == bool(subject):
        raise click.UsageError("give a memory id or --subject, not both")
    gone = obj.store().forget(memory_id=memory_id, subject=subject)
    click.echo(f"forgot {gone} fact{'s' if gone != 1 else ''}")


# -- the knowledge base ---------------------------------------------------------------


def _knowledge(obj: Context, embedder: str) -> Any:
    from .knowledge import KnowledgeBase

    rt = Runtime(obj.settings, log_events=False)
    return KnowledgeBase(
        obj.settings.workspace / "knowledge.db", rt.registry.get("embedders", embedder).value
    )


_collection = click.option("--collection", "-c", default="default", show_default=True)
_embedder = click.option("--embedder", default="minilm", show_default=True,
                         help="A registered embedder (pilothouse plugins lists them).")  # fmt: skip


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@_collection
@_embedder
@click.option("--tag", "tags", multiple=True, help="Tag the chunks (search --tag filters).")
@pass_context
def ingest(obj: Context, paths: tuple[str, ...], collection: str, embedder: str,
           tags: tuple[str, ...]) -> None:  # fmt: skip
    """Index Markdown, text and HTML files (folders too) into the knowledge base.

    Unchanged files are skipped (content hash); changed ones are re-indexed;
    files gone from an ingested folder are removed.
    """
    kb = _knowledge(obj, embedder)
    with click.progressbar(length=0, label="ingesting", file=sys.stderr) as bar:

        def step(source: str) -> None:
            bar.label = f"ingesting {Path(source).name[:40]}"
            bar.update(1)

        report = kb.ingest(paths, collection=collection, tags=tags, progress=step)
    kb.close()
    for failure in report.failed:
        click.secho(f"skipped: {failure}", fg="yellow", err=True)
    click.secho(
        f"{report.files} files: {report.updated} indexed ({report.chunks} chunks),"
        f" {report.unchanged} unchanged, {report.removed} removed -> {kb.path}",
        err=True,
    )


@cli.command()
@click.argument("query")
@_collection
@_embedder
@click.option("-k", default=5, show_default=True, help="How many chunks.")
@click.option("--source", help="Only chunks whose source path contains this.")
@click.option("--tag", help="Only chunks with this tag.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def search(obj: Context, query: str, collection: str, embedder: str, k: int,
           source: str | None, tag: str | None, as_json: bool) -> None:  # fmt: skip
    """Search the knowledge base: ranked chunks with their source and score."""
    if not (obj.settings.workspace / "knowledge.db").exists():
        raise click.ClickException("no knowledge base yet: run 'pilothouse ingest PATH' first")
    kb = _knowledge(obj, embedder)
    found = kb.search(query, k=k, collection=collection, source=source, tag=tag)
    kb.close()
    if as_json:
        click.echo(json.dumps([p.model_dump() for p in found], indent=2))
        return
    for p in found:
        heading = f" > {p.metadata['heading']}" if p.metadata.get("heading") else ""
        click.secho(f"{p.score:.4f}  {p.source}{heading}", bold=True)
        click.echo(f"  {_short(p.text, 200)}")


_portal_folder = click.option(
    "--out", type=click.Path(file_okay=False), help="Folder (default <workspace>/portal)."
)


@portal.command("build")
@_portal_folder
@click.option("--since", help="Only runs since: 7d, 12h, 30m or an ISO date.")
@click.option("--no-html", is_flag=True, help="Write the Markdown and mkdocs.yml only.")
@click.option("--full", is_flag=True, help="Render every page again, not only the changed ones.")
@pass_context
def portal_build(
    obj: Context, out: str | None, since: str | None, no_html: bool, full: bool
) -> None:
    """Regenerate the pages of new and changed runs, then build the HTML."""
    from .portal import Portal
    from .redact import Redactor

    folder = _portal_out(obj, out)
    site = Portal(obj.store(), folder, redact=Redactor.from_settings(obj.settings),
                  since=_since(since))  # fmt: skip
    made = site.generate()
    click.secho(
        f"pages: {made.written} run pages written, {made.runs - made.written} unchanged,"
        f" {made.removed} removed ({made.seconds:.2f} s)",
        err=True,
    )
    if no_html:
        click.echo(folder / "docs")
        return
    seconds = site.build(full=full)
    click.secho(f"html: built in {seconds:.2f} s", err=True)
    click.echo(folder / "site" / "index.html")


@portal.command("serve")
@_portal_folder
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@pass_context
def portal_serve(obj: Context, out: str | None, host: str, port: int) -> None:
    """Serve the built portal (pilothouse portal build first)."""
    import functools
    import http.server

    site = _portal_out(obj, out) / "site"
    if not (site / "index.html").exists():
        raise click.ClickException(f"no portal built in {site}: run 'pilothouse portal build'")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    with http.server.ThreadingHTTPServer((host, port), handler) as server:
        click.secho(f"portal on http://{host}:{port}/ (ctrl+c stops)", err=True)
        server.serve_forever()


@cli.command()
@pass_context
def crews(obj: Context) -> None:
    """List the crews that can be run and where each comes from."""
    rt = Runtime(obj.settings, log_events=False)
    for name, origin in sorted(rt.crews().items()):
        click.echo(f"{name:<20} {origin}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def config(obj: Context, as_json: bool) -> None:
    """Show the effective settings and where each came from (secrets masked)."""
    rows = obj.settings.describe()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']:<18} {row['value']:<30} " + click.style(row["source"], dim=True))


def main() -> None:
    """Entry point of the ``pilothouse`` script: errors become messages and exit codes."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(Exit.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(Exit.USAGE if isinstance(exc, click.UsageError) else Exit.CONFIG)
    except PilothouseError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(Exit.CONFIG)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(Exit.INTERRUPTED)
