"""The engine: runs a crew's flow on one input, step by step, under the crew's limits.

Everything the engine does is recorded through :class:`~pilothouse.store.eventlog.EventLog`.
Before a step starts, every step that finished before it is committed (the
durability barrier), and a run's end is committed before ``run`` returns. A
run's failure is contained in that run.

Two parts of a step live beside it: :mod:`~pilothouse.engine.calls` (which model answers,
the budget before each call, its log) and :mod:`~pilothouse.engine.oversight` (guardrail
verdicts and escalations to a person).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from ..crew import Crew, Handoff, Parallel, Persona, Sequential, Supervisor
from ..errors import (
    ConfigError,
    EscalationRejected,
    LimitExceeded,
    LoopDetected,
    ModelError,
    NotFound,
    PilothouseError,
    PluginError,
    ToolError,
)
from ..events import (
    RUN_ID,
    BaseEvent,
    ContextBuilt,
    ErrorRaised,
    HandedOff,
    LimitHit,
    MemoryWritten,
    OutputExplained,
    RetrievalDone,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunResumed,
    RunStarted,
    RunSuspended,
    StepFinished,
    StepStarted,
    ToolCalled,
)
from ..knowledge.memory import _sink as _memory_sink
from ..knowledge.memory import facts_in_output
from ..model import (
    Message,
    Model,
    ModelRequest,
    ToolSpec,
)
from ..registry import Registry
from ..retrieval import Passage
from ..settings import Settings
from ..store.base import AUDIT_SUBJECT, MemoryItem
from ..store.eventlog import EventLog
from ..tools import canonical_json, result_text
from .calls import ModelCalls
from .context import build_context
from .escalation import DecisionWatcher
from .evidence import rank_evidence
from .handoffs import HANDOFF_PREFIX, check_handoff_tools, handoff_spec, handoff_tool
from .oversight import Oversight
from .runstate import Replaying, RunResult, StepOutcome, _Run, _SentBack, _Talk, new_run_id

#: how many checked crews the engine remembers (the oldest is forgotten first)
CHECKED_CREWS = 256
#: the subject prefix of the facts a replay keeps (never the real subject's memory)
REPLAY_SUBJECT = "replay:"


class Engine:
    """Executes crews. One engine serves many concurrent runs."""

    def __init__(self, registry: Registry, log: EventLog, settings: Settings) -> None:
        self.registry = registry
        self.log = log
        self.settings = settings
        #: set by the runtime when a run store can carry decisions
        self.decisions: DecisionWatcher | None = None
        # the cancel scope of every run executing here, and why one was cancelled
        # or suspended
        self._active: dict[str, anyio.CancelScope] = {}
        self._cancel_reasons: dict[str, str] = {}
        self._suspend_reasons: dict[str, str] = {}
        #: set by replay: tool results, decisions and recalled facts come from it
        self.replaying: Replaying | None = None
        # crews already checked; the crew is kept so that its id is not reused
        self._checked: dict[tuple[int, str | None], Crew] = {}
        self.calls = ModelCalls(self)
        self.oversight = Oversight(self)

    # -- a run ------------------------------------------------------------------

    def check(self, crew: Crew, model: str | None = None) -> None:
        """Fail before a run starts if the crew names something that does not exist.

        Every persona of the flow, and each one's model, tools, retrievers and
        guardrails, must resolve; the error names the crew and what is missing.
        """
        if self._checked.get((id(crew), model)) is crew:
            return
        run = _Run(id="", crew=crew, task="", model_override=model)
        for name in crew.persona_names():
            persona = self._persona(run, name)
            self.calls.models_for(run, persona)
            guards = [*persona.guardrails.input, *persona.guardrails.output,
                      *persona.guardrails.retrieval]  # fmt: skip
            for kind, names in (
                ("tools", persona.tools),
                ("retrievers", persona.retrievers),
                ("guardrails", guards),
            ):
                for item in names:
                    try:
                        self.registry.get(kind, item)
                    except NotFound as exc:
                        raise NotFound(f"crew {crew.name!r}, persona {name!r}: {exc}") from None
            for guard in dict.fromkeys(guards):
                entry = self.registry.get("guardrails", guard)
                for spec in entry.value.models:
                    try:
                        self.calls.resolve(spec)
                    except PilothouseError as exc:
                        raise ConfigError(
                            f"crew {crew.name!r}, persona {name!r}, guardrail {guard!r}"
                            f" (plugin {entry.plugin}) asks model {spec!r}: {exc}"
                        ) from None
            if isinstance(crew.flow, Handoff):
                check_handoff_tools(
                    crew.name, persona, crew.flow.routes.get(name, persona.handoffs)
                )
            elif isinstance(crew.flow, Supervisor) and name == crew.flow.supervisor:
                check_handoff_tools(crew.name, persona, crew.flow.workers)
        self._checked[(id(crew), model)] = crew
        if len(self._checked) > CHECKED_CREWS:  # a caller making a new Crew per run
            del self._checked[next(iter(self._checked))]

    async def run(
        self,
        crew: Crew,
        task: str,
        *,
        run_id: str | None = None,
        model: str | None = None,
        subject: str | None = None,
        after_seq: int = 0,
    ) -> RunResult:
        """Run ``crew`` on ``task`` to the end; never raises for a failure of the run itself.

        :param after_seq: events the run already has (a queued run has one)
        """
        if run_id is not None and not RUN_ID.fullmatch(run_id):
            raise ConfigError(
                f"run id {run_id!r}: use 1-64 letters, digits, '-', '_' or '.',"
                " starting with a letter or digit"
            )
        run = _Run(
            id=run_id or new_run_id(), crew=crew, task=task, model_override=model, subject=subject
        )
        run.seq = after_seq
        run.memory = self._recall(subject)
        self.emit(
            run,
            RunStarted,
            crew=crew.name,
            input=task,
            flow=crew.flow.type,
            model_override=model,
            subject=subject,
            recalled=[m.id for m in run.memory],
            replay_of=self.replaying.run_id if self.replaying else None,
        )
        return await self._drive(run, crew.limits.timeout_s)

    async def resume(self, crew: Crew, events: list[BaseEvent]) -> RunResult:
        """Continue a run from its logged events: finished steps are not run again.

        A step that started but did not finish is run again, from its start (its
        partial events stay in the log); one interrupted ``max_step_interruptions``
        times fails the run. Escalations the interrupted step raised are waited
        on again, and a decision made meanwhile applies at once.
        """
        # A run a worker took from the queue logged run_queued before run_started.
        started = next((e for e in events if isinstance(e, RunStarted)), None)
        if started is None:
            raise PilothouseError(f"run {events[0].run_id} never started: nothing to resume")
        run = _Run(
            id=started.run_id,
            crew=crew,
            task=started.input,
            model_override=started.model_override,
            subject=started.subject,
        )
        # what it recalled when it started (a log from before 'recalled': the facts now),
        # then what it kept itself before the interruption (restore)
        if "recalled" in started.model_fields_set and self.log.store is not None:
            run.memory = self.log.store.memories_by_id(started.recalled)
        else:
            recalled = self._recall(started.subject)
            run.memory = [m for m in recalled if m.run_id != started.run_id]
        run.restore(events)
        self.emit(
            run,
            RunResumed,
            completed_steps=list(run.done),
            retried_steps=[s for s, n in run.attempts.items() if n],
        )
        timeout = crew.limits.timeout_s
        if timeout is not None:
            timeout = max(0.0, timeout - (time.time() - started.ts))
        return await self._drive(run, timeout)

    def cancel(self, run_id: str, reason: str = "cancelled") -> bool:
        """Cancel a run this engine is executing; False when it is not running here."""
        return self._stop(run_id, self._cancel_reasons, reason)

    def executing(self) -> list[str]:
        """The ids of the runs this engine is executing now."""
        return list(self._active)

    def suspend(self, run_id: str, reason: str) -> bool:
        """Stop a run this engine is executing without ending it: it logs
        ``run_suspended`` and stays unfinished, for another process to resume.
        False when it is not running here."""
        return self._stop(run_id, self._suspend_reasons, reason)

    def _stop(self, run_id: str, reasons: dict[str, str], reason: str) -> bool:
        scope = self._active.get(run_id)
        if scope is None:
            return False
        reasons[run_id] = reason
        scope.cancel()
        return True

    async def cancel_logged(self, events: list[BaseEvent], reason: str) -> RunResult:
        """Log the cancellation of a run no process is executing (from its events)."""
        return await self._end_logged(
            events, RunCancelled, {"reason": reason}, status="cancelled", error=reason
        )

    async def fail_logged(self, events: list[BaseEvent], error: PilothouseError) -> RunResult:
        """Log the failure of a run that cannot start or resume (its crew is gone, say),
        so that it does not stay queued or running for ever."""
        fields = {"kind": error.kind, "error_type": type(error).__name__, "message": str(error)}
        return await self._end_logged(
            events, RunFailed, fields, status="failed", error=str(error), error_kind=error.kind
        )

    async def _end_logged(
        self,
        events: list[BaseEvent],
        event_type: type[BaseEvent],
        fields: dict[str, Any],
        **result: Any,
    ) -> RunResult:
        """Log the final event of a run no process is executing, after its last event."""
        run_id, crew = events[0].run_id, events[0].crew  # type: ignore[attr-defined]
        seq = max(e.seq for e in events) + 1
        self.log.emit(event_type(run_id=run_id, seq=seq, ts=time.time(), **fields))
        await self.log.flush()
        steps = sum(e.type == "step_finished" for e in events)
        return RunResult(run_id=run_id, crew=crew, steps=steps, **result)

    async def _drive(self, run: _Run, timeout: float | None) -> RunResult:
        crew = run.crew
        result = RunResult(run_id=run.id, crew=crew.name, status="running")
        with anyio.CancelScope() as own:
            self._active[run.id] = own
            try:
                await self._execute(run, timeout, result)
            finally:
                self._active.pop(run.id, None)
        reason = self._cancel_reasons.pop(run.id, "cancelled")  # also when it ended first
        suspended = self._suspend_reasons.pop(run.id, None)
        if own.cancelled_caught:
            result.status = "suspended" if suspended else "cancelled"
            result.error = suspended or reason
        result.steps, result.cost_usd = run.steps, run.cost_usd
        result.input_tokens, result.output_tokens = run.input_tokens, run.output_tokens
        return result

    async def _execute(self, run: _Run, timeout: float | None, result: RunResult) -> None:
        crew = run.crew
        try:
            if self.log.store is not None:
                # Runs started together are all at work before the first of them
                # reaches its first commit, so they share commits from the start.
                await anyio.lowlevel.checkpoint()
            if timeout is None:
                output = await self._flow(run)
            else:
                with anyio.move_on_after(timeout) as scope:
                    output = await self._flow(run)
                if scope.cancelled_caught:
                    raise LimitExceeded(
                        "timeout_s", f"the run took longer than {crew.limits.timeout_s} s"
                    )
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                suspended = self._suspend_reasons.get(run.id)
                if suspended is not None:
                    self.emit(run, RunSuspended, reason=suspended)
                else:
                    reason = self._cancel_reasons.get(run.id, "cancelled")
                    self.emit(run, RunCancelled, reason=reason)
                await self.log.flush()
            raise
        except Exception as exc:
            self._fail(run, exc, result)
        else:
            ranked = rank_evidence(output, run.evidence) if self.log.active else None
            if ranked:
                self.emit(run, OutputExplained, evidence=ranked)
            self.emit(
                run,
                RunFinished,
                output=output,
                steps=run.steps,
                input_tokens=run.input_tokens,
                output_tokens=run.output_tokens,
                cost_usd=run.cost_usd,
            )
            result.status, result.output = "succeeded", output
        await self._flush()

    def _fail(self, run: _Run, exc: Exception, result: RunResult) -> None:
        plugin = getattr(exc, "plugin", None)
        if isinstance(exc, LimitExceeded):
            self.emit(run, LimitHit, limit=exc.limit, message=str(exc))
        else:
            cause = exc.__cause__ if isinstance(exc, PluginError) and exc.__cause__ else exc
            self.emit(
                run,
                ErrorRaised,
                error_type=type(cause).__name__,
                message=str(exc),
                plugin=plugin,
                traceback="".join(traceback.format_exception(cause)),
            )
        kind = exc.kind if isinstance(exc, PilothouseError) else "internal"
        self.emit(
            run,
            RunFailed,
            kind=kind,
            error_type=type(exc).__name__,
            message=str(exc),
            plugin=plugin,
        )
        result.status, result.error, result.error_kind = "failed", str(exc), kind

    def _recall(self, subject: str | None) -> list[MemoryItem]:
        """What the store remembers about ``subject`` (nothing without one or a store).

        An audit's runs recall nothing: each probe must start from the same state,
        or what one run remembered would tell the next which group it is in."""
        store = self.log.store
        if not subject or store is None or subject.startswith(AUDIT_SUBJECT):
            return []
        if self.replaying is not None:
            return list(self.replaying.memory)
        return store.memories(subject)

    def _remember(
        self, run: _Run, persona: str, step_id: str | None, fact: str, channel: str
    ) -> str:
        """Log a fact about the run's subject; later steps of this run see it too."""
        assert run.subject is not None
        memory_id = uuid.uuid4().hex[:12]
        subject = (REPLAY_SUBJECT if self.replaying else "") + run.subject
        self.emit(run, MemoryWritten, step_id=step_id, memory_id=memory_id,
                   subject=subject, channel=channel, fact=fact, persona=persona)  # fmt: skip
        run.memory.append(MemoryItem(id=memory_id, subject=subject, channel=channel,
                                     fact=fact, run_id=run.id, step_id=step_id,
                                     persona=persona, created=time.time()))  # fmt: skip
        return memory_id

    def _memory_sink(self, run: _Run, persona: str, step_id: str) -> Callable[[str, str], str]:
        """What :func:`pilothouse.knowledge.memory.remember` calls during a tool call: on the
        event loop directly, from a blocking tool's thread through the loop."""
        loop_thread = threading.get_ident()
        token = anyio.lowlevel.current_token()

        def sink(fact: str, channel: str) -> str:
            if threading.get_ident() == loop_thread:
                return self._remember(run, persona, step_id, fact, channel)
            return anyio.from_thread.run_sync(
                self._remember, run, persona, step_id, fact, channel, token=token
            )

        return sink

    async def _flush(self) -> None:
        """Commit what was emitted (the durability barrier).

        A run alone at work commits at once: no other run's events could share the
        commit. Runs at work together wait for the background flusher, which commits
        the events of all of them in one transaction.
        """
        await self.log.flush(alone=len(self._active) == 1)

    def emit(self, run: _Run, event_type: type[BaseEvent], **fields: Any) -> None:
        """Log an event of ``run`` (its next sequence number and the time are added)."""
        run.seq += 1
        if self.log.active:  # nobody stores or watches: the event need not exist
            self.log.emit(event_type(run_id=run.id, seq=run.seq, ts=time.time(), **fields))

    # -- flows ------------------------------------------------------------------

    async def _flow(self, run: _Run) -> str:
        flow = run.crew.flow
        if isinstance(flow, Sequential):
            return await self._sequential(run, flow)
        if isinstance(flow, Parallel):
            return await self._parallel(run, flow)
        if isinstance(flow, Supervisor):
            return await self._supervise(run, flow)
        return await self._handoff(run, flow)

    async def _sequential(self, run: _Run, flow: Sequential) -> str:
        text, previous = run.task, None
        for index, stage in enumerate(flow.steps, start=1):
            if isinstance(stage, str):
                outcome = await self._step(run, stage, text, str(index), previous)
                text, previous = outcome.output, stage
            else:
                text = await self._fan_out(run, stage, text, str(index), previous)
                previous = ", ".join(stage)
        return text

    async def _parallel(self, run: _Run, flow: Parallel) -> str:
        joined = await self._fan_out(run, flow.branches, run.task, "1", None)
        if flow.join is None:
            return joined
        outcome = await self._step(run, flow.join, joined, "2", ", ".join(flow.branches))
        return outcome.output

    async def _fan_out(
        self, run: _Run, names: list[str], text: str, prefix: str, previous: str | None
    ) -> str:
        outputs: list[str] = [""] * len(names)
        errors: list[Exception] = []

        async def branch(i: int, name: str, scope: anyio.CancelScope) -> None:
            try:
                outputs[i] = (
                    await self._step(run, name, text, f"{prefix}.{i + 1}", previous)
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

    async def _supervise(self, run: _Run, flow: Supervisor) -> str:
        """The supervisor's steps and its workers' steps, in turn, until it answers."""
        reports: list[tuple[str, str, str]] = []  # (worker, what it was asked, its output)
        index = 0
        while True:
            index += 1
            briefing = "\n\n".join(
                f"## {worker} (asked: {asked})\n{output}" for worker, asked, output in reports
            )
            done_by = ", ".join(dict.fromkeys(worker for worker, _, _ in reports)) or None
            outcome = await self._step(
                run, flow.supervisor, briefing or run.task, str(index), done_by, flow.workers
            )
            if outcome.handoff_to is None:
                return outcome.output
            self._count_handoff(run, str(index), flow.supervisor, outcome)
            index += 1
            worker, asked = outcome.handoff_to, outcome.output
            result = await self._step(run, worker, asked, str(index), flow.supervisor)
            reports.append((worker, asked, result.output))

    def _count_handoff(self, run: _Run, step_id: str, source: str, outcome: StepOutcome) -> None:
        """A handoff (or a delegation) within ``max_handoffs``, logged once."""
        run.handoffs += 1
        if run.handoffs > run.crew.limits.max_handoffs:
            raise LimitExceeded(
                "max_handoffs", f"more than {run.crew.limits.max_handoffs} handoffs in one run"
            )
        if step_id not in run.done:  # a resumed run logged it already
            self.emit(run, HandedOff, step_id=step_id, source=source,
                      target=outcome.handoff_to, message=outcome.output)  # fmt: skip

    async def _handoff(self, run: _Run, flow: Handoff) -> str:
        current, text, previous = flow.start, run.task, None
        index = 0
        while True:
            index += 1
            persona = self._persona(run, current)
            targets = flow.routes.get(current, persona.handoffs)
            outcome = await self._step(run, current, text, str(index), previous, targets)
            if outcome.handoff_to is None:
                return outcome.output
            self._count_handoff(run, str(index), current, outcome)
            run.trail.append(outcome.handoff_to)
            self._check_ping_pong(run)
            previous, current, text = current, outcome.handoff_to, outcome.output

    # -- one step ---------------------------------------------------------------

    async def _step(
        self,
        run: _Run,
        name: str,
        text: str,
        step_id: str,
        previous: str | None,
        handoff_targets: list[str] | None = None,
    ) -> StepOutcome:
        """One persona's turn: its context, its conversation with its model (tool calls,
        schema retries, revisions a person asked for) and its guarded output."""
        done = await self._admit(run, name, text, step_id)
        if done is not None:
            return done
        persona = self._persona(run, name)
        models = self.calls.models_for(run, persona)
        self.emit(run, StepStarted, step_id=step_id, persona=name, input=text, model=models[0].id)
        if persona.guardrails.input:
            text = await self.oversight.guard(run, persona, "input", text, step_id)

        passages: list[tuple[str, Passage]] = []
        for retriever_name in persona.retrievers:
            passages.extend(await self._retrieve(run, persona, retriever_name, text, step_id))
        if persona.guardrails.retrieval:
            passages = await self.oversight.screen(run, persona, passages, step_id)
        window = build_context(
            persona,
            task=run.task,
            step_input=text,
            previous=previous,
            passages=passages,
            memory=run.memory,
            subject=run.subject,
            provenance=self.log.active,
        )
        if self.log.active:
            self.emit(run, ContextBuilt, step_id=step_id, persona=name, pieces=window.pieces,
                       tokens=window.tokens, dropped=window.dropped)  # fmt: skip

        tools = [self.registry.get("tools", t).value for t in persona.tools]
        specs = [t.spec() for t in tools]
        targets = {handoff_tool(target): target for target in handoff_targets or ()}
        for target in targets.values():
            specs.append(handoff_spec(target, self._persona(run, target)))
        messages = window.messages
        step_in = step_out = revisions = schema_retries = 0
        while True:
            talk = await self._converse(run, persona, models, messages, specs, step_id)
            models, messages = talk.models, talk.messages
            step_in += talk.input_tokens
            step_out += talk.output_tokens
            if talk.handoff is not None:
                return await self._finish_handoff(
                    run, persona, talk.handoff, targets[talk.handoff.name], step_id, step_in,
                    step_out,
                )  # fmt: skip
            output = (talk.response.text if talk.response else None) or ""
            if persona.output_schema is not None:
                try:
                    _check_structured(output, persona.output_schema, models[0].id)
                except ModelError as exc:
                    # the model hears what was wrong and answers again, a bounded number of
                    # times (the next model call's messages show it in the log)
                    schema_retries += 1
                    if schema_retries > run.crew.limits.max_schema_retries:
                        raise
                    messages = _answer_again(
                        messages, output, f"{exc}. Answer again with only JSON that matches"
                        " the output schema."
                    )  # fmt: skip
                    continue
            try:
                if persona.guardrails.output:
                    evidence = [
                        *(p.text for _, p in passages),
                        *(m.content or "" for m in messages if m.role == "tool"),
                        text,
                    ]
                    output = await self.oversight.guard(
                        run, persona, "output", output, step_id, evidence
                    )
                if persona.risk_field is not None:
                    output = await self.oversight.check_risk(run, persona, output, step_id)
            except _SentBack as back:
                revisions += 1
                allowed = run.crew.escalation.max_revisions
                if revisions > allowed:
                    raise EscalationRejected(
                        f"{name!r} was rejected {revisions} times, its revisions too"
                        f" (max_revisions = {allowed}); the last note: {back.note}"
                    ) from None
                messages = _answer_again(
                    messages, output, f"A reviewer sent this back: {back.note}\nRevise your answer."
                )
                continue
            break
        self.emit(
            run,
            StepFinished,
            step_id=step_id,
            persona=name,
            output=output,
            input_tokens=step_in,
            output_tokens=step_out,
        )
        run.unflushed = True
        run.evidence.append(("output", name, step_id, output))
        if run.subject and persona.memory_field:
            for fact, channel in facts_in_output(output, persona.memory_field,
                                                 persona.memory_channel):  # fmt: skip
                self._remember(run, name, step_id, fact, channel)
        return StepOutcome(output=output)

    async def _admit(self, run: _Run, name: str, text: str, step_id: str) -> StepOutcome | None:
        """What comes before a step: the steps finished so far committed (the durability
        barrier), then the crew's step limit and loop rule. Returns the outcome of a step
        that finished before the run was interrupted (a resumed run does not redo it)."""
        if run.unflushed and self.log.store is not None:
            run.unflushed = False
            await self._flush()
        limits = run.crew.limits
        if run.steps >= limits.max_steps:
            raise LimitExceeded("max_steps", f"the run reached max_steps = {limits.max_steps}")
        run.steps += 1
        key = (name, " ".join(text.lower().split()))
        if key in run.seen_inputs:
            raise LoopDetected("loop", f"{name!r} received the same input a second time")
        run.seen_inputs.add(key)
        if not run.trail:
            run.trail.append(name)
        done = run.done.get(step_id)
        if done is not None:
            return StepOutcome(output=done.output, handoff_to=done.handoff_to)
        if run.attempts.get(step_id, 0) >= limits.max_step_interruptions:
            raise PilothouseError(
                f"step {step_id} ({name}) was interrupted {run.attempts[step_id]} times;"
                " it is not retried again"
            )
        return None

    async def _converse(
        self,
        run: _Run,
        persona: Persona,
        models: list[Model],
        messages: list[Message],
        specs: list[ToolSpec],
        step_id: str,
    ) -> _Talk:
        """Model calls and tool calls until the model answers or hands off."""
        talk = _Talk(models=models, messages=messages)
        limits = run.crew.limits
        # A model may name any tool, on an injected instruction for one; only those it
        # was offered (the persona's tools and handoff routes) are ever run.
        offered = [spec.name for spec in specs]
        for _round in range(limits.max_tool_rounds):
            request = ModelRequest(
                model=talk.models[0].name,
                messages=messages,
                tools=specs,
                response_schema=persona.output_schema,
                max_output_tokens=persona.max_output_tokens,
                temperature=persona.temperature,
            )
            talk.models, talk.response = await self.calls.call_with_fallbacks(
                run, persona, talk.models, request, step_id
            )
            response = talk.response
            talk.input_tokens += response.usage.input_tokens
            talk.output_tokens += response.usage.output_tokens
            if not response.tool_calls:
                return talk
            talk.handoff = next(
                (c for c in response.tool_calls
                 if c.name.startswith(HANDOFF_PREFIX) and c.name in offered), None
            )  # fmt: skip
            if talk.handoff is not None:
                return talk
            messages = [
                *messages,
                Message(role="assistant", content=response.text, tool_calls=response.tool_calls),
            ]
            for call in response.tool_calls:
                result = await self._tool_call(run, persona, call, step_id, offered)
                messages.append(Message(role="tool", tool_call_id=call.id, content=result))
            talk.messages = messages
        raise LimitExceeded(
            "max_tool_rounds",
            f"{persona.name!r} was still calling tools after {limits.max_tool_rounds} rounds",
        )

    async def _finish_handoff(
        self,
        run: _Run,
        persona: Persona,
        call: Any,
        target: str,
        step_id: str,
        step_in: int,
        step_out: int,
    ) -> StepOutcome:
        try:
            message = str(json.loads(call.arguments or "{}").get("message", ""))
        except (json.JSONDecodeError, AttributeError):
            message = ""
        message = message or run.task
        self.emit(
            run,
            StepFinished,
            step_id=step_id,
            persona=persona.name,
            output=message,
            input_tokens=step_in,
            output_tokens=step_out,
            handoff_to=target,
        )
        run.unflushed = True
        return StepOutcome(output=message, handoff_to=target)

    # -- the parts of a step ------------------------------------------------------

    def _persona(self, run: _Run, name: str) -> Persona:
        persona = run.crew.personas.get(name)
        if persona is not None:
            return persona
        try:
            return self.registry.get("personas", name).value
        except NotFound:
            raise NotFound(
                f"crew {run.crew.name!r} names persona {name!r}, which is neither in the crew"
                " nor registered by a plugin"
            ) from None

    async def _tool_call(
        self, run: _Run, persona: Persona, call: Any, step_id: str, offered: list[str]
    ) -> str:
        started = time.perf_counter()
        result: str | None = None
        error: str | None = None
        try:
            entry = self.registry.tools.get(call.name) if call.name in offered else None
            if entry is None:
                raise ToolError(
                    f"{persona.name!r} has no tool named {call.name!r}"
                    f" (its tools: {', '.join(offered) or 'none'})"
                )
            tool = entry.value
            arguments = tool.parse_arguments(call.arguments)
            canonical = json.dumps(arguments.model_dump(mode="json"), sort_keys=True)
            key = (tool.name, canonical)
            run.tool_calls[key] = calls = run.tool_calls.get(key, 0) + 1
            if calls > run.crew.limits.max_identical_tool_calls:
                raise LoopDetected(
                    "loop",
                    f"tool {tool.name!r} was called with the same arguments"
                    f" {run.crew.limits.max_identical_tool_calls + 1} times",
                )
            if tool.requires_approval:
                arguments = await self.oversight.approve_tool(
                    run, persona, tool, arguments, step_id
                )
            try:
                if self.replaying is not None:
                    result = self.replaying.tool_result(tool.name, canonical_json(call.arguments))
                else:
                    sink = self._memory_sink(run, persona.name, step_id) if run.subject else None
                    token = _memory_sink.set(sink)
                    try:
                        result = result_text(await tool.invoke(arguments))
                    finally:
                        _memory_sink.reset(token)
                    result = _cut(result, run.crew.limits.max_tool_result_chars)
            except ToolError as exc:
                error = str(exc)
            except Exception as exc:  # the model hears about it, the run goes on
                error = (
                    f"tool {tool.name!r} (plugin {entry.plugin!r})"
                    f" raised {type(exc).__name__}: {exc}"
                )
        except ToolError as exc:
            error = str(exc)
        if result is not None:
            run.evidence.append(("tool", call.name, step_id, result))
        self.emit(
            run,
            ToolCalled,
            step_id=step_id,
            call_id=call.id,
            tool=call.name,
            arguments=call.arguments,
            result=result,
            error=error,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
        return result if error is None else f"error: {error}"

    async def _retrieve(
        self, run: _Run, persona: Persona, name: str, query: str, step_id: str
    ) -> list[tuple[str, Passage]]:
        entry = self.registry.get("retrievers", name)
        try:
            passages = await entry.value.search(query, k=persona.retrieve_k)
        except PilothouseError:
            raise
        except Exception as exc:
            raise PluginError(
                entry.plugin, f"retriever {name!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        self.emit(
            run, RetrievalDone, step_id=step_id, retriever=name, query=query, passages=passages
        )
        run.evidence += [("passage", p.id, step_id, p.text) for p in passages]
        return [(name, p) for p in passages]

    def _check_ping_pong(self, run: _Run) -> None:
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


def _answer_again(messages: list[Message], answer: str, why: str) -> list[Message]:
    """The conversation with the model's answer and a request to answer again."""
    return [*messages, Message(role="assistant", content=answer), Message(role="user", content=why)]


def _cut(result: str, limit: int) -> str:
    """A tool result as the model gets it and the log keeps it: at most ``limit``
    characters, and a note saying how much was left out."""
    if len(result) <= limit:
        return result
    return f"{result[:limit]}\n[... cut: {len(result) - limit} more characters]"


def _check_structured(output: str, schema: dict[str, Any], model_id: str) -> None:
    try:
        data = json.loads(output)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{model_id} did not return JSON for an output schema: {exc}") from None
    if schema.get("type") == "object":
        if not isinstance(data, dict):
            raise ModelError(
                f"{model_id} returned {type(data).__name__}, the schema wants an object"
            )
        missing = [k for k in schema.get("required", []) if k not in data]
        if missing:
            raise ModelError(f"{model_id}'s output lacks required field(s): {', '.join(missing)}")
