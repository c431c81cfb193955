"""The engine: runs a crew on one input, under the crew's limits; many runs at once.

Everything the engine does is recorded through :class:`~pilothouse.store.eventlog.EventLog`.
Before a step starts, every step that finished before it is committed (the
durability barrier), and a run's end is committed before ``run`` returns. A
run's failure is contained in that run.

This module holds a run's life (start, resume, cancel, suspend, its end and its
memory); :mod:`.flows` decides which persona takes each step, :mod:`.steps` takes
it, with :mod:`.calls` (which model answers, the budget before each call, its log)
and :mod:`.oversight` (guardrail verdicts and escalations to a person).
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from ..crew import Crew, Handoff, Supervisor
from ..errors import (
    ConfigError,
    LimitExceeded,
    NotFound,
    PilothouseError,
    PluginError,
    RunBusy,
    StoreUnavailable,
)
from ..events import (
    RUN_ID,
    BaseEvent,
    ErrorRaised,
    LimitHit,
    MemoryWritten,
    OutputExplained,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunResumed,
    RunStarted,
    RunSuspended,
)
from ..registry import Registry
from ..settings import Settings
from ..store.base import AUDIT_SUBJECT, MemoryItem
from ..store.eventlog import EventLog
from .calls import ModelCalls
from .escalation import DecisionWatcher
from .evidence import rank_evidence
from .flows import run_flow
from .handoffs import check_handoff_tools
from .oversight import Oversight
from .runstate import Replaying, RunResult, _Run, new_run_id, taken_over_message
from .steps import Steps

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
        #: set by the runtime when an exporter traces: model requests carry traceparent
        self.propagate = False
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
        self.steps = Steps(self)

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
            persona = self.steps.persona(run, name)
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
                        if kind == "tools" and ":" in item:  # a toolset's: mcp:time/*
                            prefix, _, pattern = item.partition(":")
                            self.registry.get("toolsets", prefix).value.check(pattern)
                        else:
                            self.registry.get(kind, item)
                    except (NotFound, ConfigError) as exc:
                        raise type(exc)(f"crew {crew.name!r}, persona {name!r}: {exc}") from None
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
        labels: dict[str, str] | None = None,
    ) -> RunResult:
        """Run ``crew`` on ``task`` to the end; never raises for a failure of the run itself.

        :param after_seq: events the run already has (a queued run has one)
        :param labels: where the run came from, logged with its start
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
            labels=labels or {},
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
                output = await run_flow(self, run)
            else:
                with anyio.move_on_after(timeout) as scope:
                    output = await run_flow(self, run)
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
                # a store that does not answer is not waited for here (a worker told to
                # stop must stop): the event stays queued for the flusher's last try
                if not self.log.unreachable:
                    await self.log.flush()
            raise
        except StoreUnavailable as exc:
            # The database blinked for longer than store_outage_s: the run is not failed
            # for it. It stops here, its finished steps and this suspension queued, and
            # any worker resumes it from its last logged step once the store answers.
            reason = f"suspended while the run store was unreachable: {exc}"
            self.emit(run, RunSuspended, reason=reason)
            result.status, result.error, result.error_kind = "suspended", reason, exc.kind
            return
        except RunBusy as exc:  # taken over elsewhere during an outage: nothing to log here
            result.status, result.error, result.error_kind = "suspended", str(exc), exc.kind
            return
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
        await self.flush()
        store = self.log.store
        if store is not None and store.taken_over(run.id):  # its end was not written here
            result.status, result.output, result.error_kind = "suspended", None, "busy"
            result.error = taken_over_message(run.id)

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

    def remember(
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

    def memory_sink(self, run: _Run, persona: str, step_id: str) -> Callable[[str, str], str]:
        """What :func:`pilothouse.knowledge.memory.remember` calls during a tool call: on the
        event loop directly, from a blocking tool's thread through the loop."""
        loop_thread = threading.get_ident()
        token = anyio.lowlevel.current_token()

        def sink(fact: str, channel: str) -> str:
            if threading.get_ident() == loop_thread:
                return self.remember(run, persona, step_id, fact, channel)
            return anyio.from_thread.run_sync(
                self.remember, run, persona, step_id, fact, channel, token=token
            )

        return sink

    async def flush(self) -> None:
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
            self.log.record(event_type, run.id, run.seq, time.time(), fields)
