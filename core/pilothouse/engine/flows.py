"""The flows: which persona takes a step on what, and what the run answers.

Sequential stages (each may fan out), parallel branches with an optional join, a
handoff chain with loop rules, and a supervisor handing parts of the work to its
workers. Each step is :meth:`~pilothouse.engine.steps.Steps.step`; a handoff counts
against ``max_handoffs`` and is logged once, also when a resumed run replays it.
"""

from __future__ import annotations

import itertools
from typing import Any, Protocol

import anyio

from ..crew import Handoff, Parallel, Sequential, Supervisor
from ..errors import LimitExceeded, LoopDetected
from ..events import BaseEvent, HandedOff
from .runstate import StepOutcome, _Run
from .steps import Steps


class Host(Protocol):
    """What the flows need of the engine they serve."""

    steps: Steps

    def emit(self, run: _Run, event_type: type[BaseEvent], **fields: Any) -> None:
        """Log an event of ``run``."""


async def run_flow(engine: Host, run: _Run) -> str:
    """Run the crew's flow on ``run`` and return its output."""
    flow = run.crew.flow
    if isinstance(flow, Sequential):
        return await _sequential(engine, run, flow)
    if isinstance(flow, Parallel):
        return await _parallel(engine, run, flow)
    if isinstance(flow, Supervisor):
        return await _supervise(engine, run, flow)
    return await _handoff(engine, run, flow)


async def _sequential(engine: Host, run: _Run, flow: Sequential) -> str:
    text, previous = run.task, None
    for index, stage in enumerate(flow.steps, start=1):
        if isinstance(stage, str):
            outcome = await engine.steps.step(run, stage, text, str(index), previous)
            text, previous = outcome.output, stage
        else:
            text = await _fan_out(engine, run, stage, text, str(index), previous)
            previous = ", ".join(stage)
    return text


async def _parallel(engine: Host, run: _Run, flow: Parallel) -> str:
    joined = await _fan_out(engine, run, flow.branches, run.task, "1", None)
    if flow.join is None:
        return joined
    outcome = await engine.steps.step(run, flow.join, joined, "2", ", ".join(flow.branches))
    return outcome.output


async def _fan_out(
    engine: Host, run: _Run, names: list[str], text: str, prefix: str, previous: str | None
) -> str:
    outputs: list[str] = [""] * len(names)
    errors: list[Exception] = []

    async def branch(i: int, name: str, scope: anyio.CancelScope) -> None:
        try:
            outputs[i] = (
                await engine.steps.step(run, name, text, f"{prefix}.{i + 1}", previous)
            ).output
        except Exception as exc:  # first failure cancels the siblings
            errors.append(exc)
            scope.cancel()

    async with anyio.create_task_group() as tg:
        for i, name in enumerate(names):
            tg.start_soon(branch, i, name, tg.cancel_scope)
    if errors:
        raise errors[0]
    return "\n\n".join(f"## {name}\n{out}" for name, out in zip(names, outputs, strict=True))


async def _supervise(engine: Host, run: _Run, flow: Supervisor) -> str:
    """The supervisor's steps and its workers' steps, in turn, until it answers."""
    reports: list[tuple[str, str, str]] = []  # (worker, what it was asked, its output)
    index = 0
    while True:
        index += 1
        briefing = "\n\n".join(
            f"## {worker} (asked: {asked})\n{output}" for worker, asked, output in reports
        )
        done_by = ", ".join(dict.fromkeys(worker for worker, _, _ in reports)) or None
        outcome = await engine.steps.step(
            run, flow.supervisor, briefing or run.task, str(index), done_by, flow.workers
        )
        if outcome.handoff_to is None:
            return outcome.output
        _count_handoff(engine, run, str(index), flow.supervisor, outcome)
        index += 1
        worker, asked = outcome.handoff_to, outcome.output
        result = await engine.steps.step(run, worker, asked, str(index), flow.supervisor)
        reports.append((worker, asked, result.output))


def _count_handoff(
    engine: Host, run: _Run, step_id: str, source: str, outcome: StepOutcome
) -> None:
    """A handoff (or a delegation) within ``max_handoffs``, logged once."""
    run.handoffs += 1
    if run.handoffs > run.crew.limits.max_handoffs:
        raise LimitExceeded(
            "max_handoffs", f"more than {run.crew.limits.max_handoffs} handoffs in one run"
        )
    if step_id not in run.done:  # a resumed run logged it already
        engine.emit(run, HandedOff, step_id=step_id, source=source,
                  target=outcome.handoff_to, message=outcome.output)  # fmt: skip


async def _handoff(engine: Host, run: _Run, flow: Handoff) -> str:
    current, text, previous = flow.start, run.task, None
    index = 0
    while True:
        index += 1
        persona = engine.steps.persona(run, current)
        targets = flow.routes.get(current, persona.handoffs)
        outcome = await engine.steps.step(run, current, text, str(index), previous, targets)
        if outcome.handoff_to is None:
            return outcome.output
        _count_handoff(engine, run, str(index), current, outcome)
        run.trail.append(outcome.handoff_to)
        _check_ping_pong(engine, run)
        previous, current, text = current, outcome.handoff_to, outcome.output


def _check_ping_pong(engine: Host, run: _Run) -> None:
    window = 2 * run.crew.limits.max_ping_pong + 1
    trail = run.trail[-window:]
    if (
        len(trail) == window
        and len(set(trail)) == 2
        and all(a != b for a, b in itertools.pairwise(trail))
    ):
        a, b = trail[0], trail[1]
        raise LoopDetected(
            "loop",
            f"{a!r} and {b!r} handed the work back and forth"
            f" {run.crew.limits.max_ping_pong} times without finishing",
        )
