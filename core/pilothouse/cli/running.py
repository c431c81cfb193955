"""Running crews: run, demo, worker, resume, cancel and replay."""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

import anyio
import click

from ..engine.runstate import RunResult
from ..errors import PilothouseError, StoreUnavailable
from ..events import STATUS_COLOURS, BaseEvent
from ..runtime import Runtime
from .base import DEMO_INPUT, Context, Exit, cli, pass_context


def _progress(quiet: bool) -> Any:
    def show(event: BaseEvent) -> None:
        if quiet:
            return
        t = event.type
        if t == "run_started":  # the id at once: to follow, cancel or decide from elsewhere
            click.secho(f"run {event.crew} {event.run_id}", err=True, bold=True)  # type: ignore[attr-defined]
        elif t == "step_started":
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
    return {"limit": Exit.LIMIT, "guardrail": Exit.BLOCKED, "store_unavailable": Exit.STORE}.get(
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
    started: list[str] = []  # the run's id, once it has one

    async def go() -> RunResult:
        async with Runtime(obj.settings) as rt:
            rt.subscribe(_progress(quiet or as_json))
            rt.subscribe(lambda e: started.append(e.run_id) if e.type == "run_started" else None)
            crew_obj = rt.crew(crew)
            if wait is not None:
                rules = crew_obj.escalation.model_copy(update={"timeout_s": wait})
                crew_obj = crew_obj.model_copy(update={"escalation": rules})
            return await rt.run(crew_obj, text, model=model, subject=subject)

    try:
        result = anyio.run(go)
    except KeyboardInterrupt:
        if not started:
            raise
        run_id = started[0]
        click.echo(f"interrupted: run {run_id} is cancelled; the steps it finished are in"
                   f" the log (pilothouse show {run_id})", err=True)  # fmt: skip
        sys.exit(Exit.INTERRUPTED)
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
        if not as_json and not quiet:
            hint = f"queued: a 'pilothouse worker' on {obj.settings.workspace} runs it"
            click.secho(f"{hint} ('pilothouse show {run_id}' follows it)", err=True, dim=True)
        return
    _start(obj, crew, text, model, quiet, as_json, subject=subject)


@cli.command()
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Runs at once.",
)
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
        rt = await _runtime_when_the_store_answers(obj)
        async with rt, anyio.create_task_group() as tg:
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


async def _runtime_when_the_store_answers(obj: Context) -> Runtime:
    """A worker's runtime, once its run store can be reached: a worker started before
    its database (a machine booting, a pod scheduled first) waits for it, saying so
    once, rather than exiting. A store that needs a fix (a wrong password) still ends
    it at once."""
    pause, said = 0.25, False
    while True:
        try:
            return Runtime(obj.settings)
        except StoreUnavailable as exc:
            if not said:
                click.secho(f"worker: waiting for the run store: {exc}", err=True)
                said = True
            await anyio.sleep(pause)
            pause = min(5.0, pause * 2)


@cli.command()
@click.option("--input", "-i", "text", default=DEMO_INPUT, show_default=False, help="Demo input.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
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
    from ..audits.replay import replay as replay_run

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
        ending = "" if report.replay.ok else ", and failed the same way"
        click.secho(
            f"identical: replay {report.replay.run_id} of run {report.original} matched all"
            f" {report.steps} steps{ending} ({report.served} model calls served from the"
            " recording)",
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
    """Cancel a run: the process executing it stops it and logs why (a queued or
    stalled run, which no process executes, is cancelled at once)."""
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
