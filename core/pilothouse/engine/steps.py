"""One step: a persona's turn, from its context window to its guarded output.

Before it starts, the steps finished so far are committed and the crew's step
limit and loop rule are checked (``_admit``); then the persona's input guardrails,
its retrievals, its context window, its conversation with its model (tool calls,
schema retries, revisions a person asked for) and its output guardrails. A step a
resumed run finished before is not done again: its logged outcome is returned.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from ..asking import _ask_sink
from ..crew import HANDOFF_PREFIX, Persona
from ..errors import (
    EscalationRejected,
    LimitExceeded,
    LoopDetected,
    ModelError,
    NotFound,
    PilothouseError,
    PluginError,
    RunBusy,
    StoreUnavailable,
    ToolError,
)
from ..events import (
    BaseEvent,
    ContextBuilt,
    RetrievalDone,
    StepFinished,
    StepStarted,
    ToolCalled,
    ToolStarted,
)
from ..knowledge.memory import _sink as _memory_sink
from ..knowledge.memory import facts_in_output
from ..model import Message, Model, ModelRequest, ModelResponse, ToolSpec
from ..registry import Registry
from ..retrieval import Passage, search_within
from ..store.eventlog import EventLog
from ..structured import output_problem
from ..tools import canonical_json, result_text
from .calls import ModelCalls
from .context import build_context, fence_result
from .handoffs import handoff_spec, handoff_tool
from .oversight import Oversight
from .runstate import Replaying, StepOutcome, _Run, _SentBack, _Talk, taken_over_message


class Host(Protocol):
    """What a step needs of the engine it serves."""

    registry: Registry
    log: EventLog
    replaying: Replaying | None
    calls: ModelCalls
    oversight: Oversight

    def emit(self, run: _Run, event_type: type[BaseEvent], **fields: Any) -> None:
        """Log an event of ``run``."""

    async def flush(self) -> None:
        """Commit what was emitted (the durability barrier)."""

    def remember(
        self, run: _Run, persona: str, step_id: str | None, fact: str, channel: str
    ) -> str:
        """Keep a fact about the run's subject."""

    def memory_sink(self, run: _Run, persona: str, step_id: str) -> Callable[[str, str], str]:
        """What :func:`pilothouse.remember` calls during one of the run's tool calls."""


class Steps:
    """Takes the steps of every run of one engine."""

    def __init__(self, engine: Host) -> None:
        self.engine = engine

    async def step(
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
        persona = self.persona(run, name)
        models = self.engine.calls.models_for(run, persona)
        self.engine.emit(
            run, StepStarted, step_id=step_id, persona=name, input=text, model=models[0].id
        )
        if persona.guardrails.input:
            text = await self.engine.oversight.guard(run, persona, "input", text, step_id)

        passages: list[tuple[str, Passage]] = []
        for retriever_name in persona.retrievers:
            passages.extend(await self._retrieve(run, persona, retriever_name, text, step_id))
        if persona.guardrails.retrieval:
            passages = await self.engine.oversight.screen(run, persona, passages, step_id)
        window = build_context(
            persona,
            task=run.task,
            step_input=text,
            previous=previous,
            passages=passages,
            memory=run.memory,
            subject=run.subject,
            provenance=self.engine.log.active,
        )
        if self.engine.log.active:
            self.engine.emit(run, ContextBuilt, step_id=step_id, persona=name, pieces=window.pieces,
                       tokens=window.tokens, dropped=window.dropped)  # fmt: skip

        tools = await self._tools(persona)
        specs = [t.spec() for t, _ in tools.values()]
        targets = {handoff_tool(target): target for target in handoff_targets or ()}
        for target in targets.values():
            specs.append(handoff_spec(target, self.persona(run, target)))
        messages = window.messages
        step_in = step_out = revisions = schema_retries = 0
        while True:
            talk = await self._converse(run, persona, models, messages, specs, step_id, tools)
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
                    _check_structured(output, persona, models[0].id, talk.response)
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
                    output = await self.engine.oversight.guard(
                        run, persona, "output", output, step_id, evidence
                    )
                if persona.risk_field is not None:
                    output = await self.engine.oversight.check_risk(run, persona, output, step_id)
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
        self.engine.emit(
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
                self.engine.remember(run, name, step_id, fact, channel)
        return StepOutcome(output=output)

    async def _admit(self, run: _Run, name: str, text: str, step_id: str) -> StepOutcome | None:
        """What comes before a step: the steps finished so far committed (the durability
        barrier), then the crew's step limit and loop rule. Returns the outcome of a step
        that finished before the run was interrupted (a resumed run does not redo it)."""
        store = self.engine.log.store
        if run.unflushed and store is not None:
            run.unflushed = False
            await self.engine.flush()
            if store.taken_over(run.id):
                raise RunBusy(taken_over_message(run.id))
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
        tools: dict[str, tuple[Any, str]],
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
            ask = _ask_sink.set(functools.partial(self.engine.oversight.ask, run, persona, step_id))
            try:
                talk.models, talk.response = await self.engine.calls.call_with_fallbacks(
                    run, persona, talk.models, request, step_id
                )
            finally:
                _ask_sink.reset(ask)
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
                result = await self._tool_call(run, persona, call, step_id, offered, tools)
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
        self.engine.emit(
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

    def persona(self, run: _Run, name: str) -> Persona:
        """The crew's persona ``name``, or one a plugin registered."""
        persona = run.crew.personas.get(name)
        if persona is not None:
            return persona
        try:
            return self.engine.registry.get("personas", name).value
        except NotFound:
            raise NotFound(
                f"crew {run.crew.name!r} names persona {name!r}, which is neither in the crew"
                " nor registered by a plugin"
            ) from None

    async def _tools(self, persona: Persona) -> dict[str, tuple[Any, str]]:
        """The persona's tools by the name the model calls them: each with its plugin.
        A toolset's (``mcp:time/*``) are resolved now, the toolset caching them."""
        found: dict[str, tuple[Any, str]] = {}
        registry = self.engine.registry
        for item in persona.tools:
            if ":" in item:
                prefix, _, pattern = item.partition(":")
                entry = registry.get("toolsets", prefix)
                for tool in await entry.value.resolve(pattern):
                    found[tool.name] = (tool, entry.plugin)
            else:
                entry = registry.get("tools", item)
                found[entry.value.name] = (entry.value, entry.plugin)
        return found

    async def _tool_call(
        self,
        run: _Run,
        persona: Persona,
        call: Any,
        step_id: str,
        offered: list[str],
        tools: dict[str, tuple[Any, str]],
    ) -> str:
        started = time.perf_counter()
        result: str | None = None
        error: str | None = None
        found: tuple[Any, str] | None = None
        careful = False
        try:
            found = tools.get(call.name) if call.name in offered else None
            if found is None:
                raise ToolError(
                    f"{persona.name!r} has no tool named {call.name!r}"
                    f" (its tools: {', '.join(offered) or 'none'})"
                )
            tool, plugin = found
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
            given: str | None = None
            if run.logged_calls or run.in_flight:  # a resumed run's calls from before
                logged = (step_id, tool.name, canonical_json(call.arguments))
                if run.logged_calls.get(logged):
                    # it answered before the process stopped: never sent twice
                    return _told_of(run.logged_calls[logged].pop(0), tool)
                if run.in_flight[logged] > 0:
                    run.in_flight[logged] -= 1
                    if not getattr(tool, "idempotent", True):  # it may have run: ask
                        given = await self.engine.oversight.outcome_unknown(
                            run, persona, tool, call, step_id
                        )
            if tool.requires_approval and given is None:
                arguments = await self.engine.oversight.approve_tool(
                    run, persona, tool, arguments, step_id
                )
            careful = (
                not getattr(tool, "idempotent", True)
                and self.engine.replaying is None
                and given is None
            )
            if careful:
                self.engine.emit(run, ToolStarted, step_id=step_id, call_id=call.id,
                                 tool=call.name, arguments=call.arguments,
                                 source=getattr(tool, "source", None) or plugin)  # fmt: skip
                await self.engine.flush()
            try:
                if given is not None:
                    result = given
                elif self.engine.replaying is not None:
                    result = self.engine.replaying.tool_result(
                        tool.name, canonical_json(call.arguments)
                    )
                else:
                    sink = (
                        self.engine.memory_sink(run, persona.name, step_id) if run.subject else None
                    )
                    token = _memory_sink.set(sink)
                    try:
                        result = result_text(await tool.invoke(arguments))
                    finally:
                        _memory_sink.reset(token)
                    result = _cut(result, run.crew.limits.max_tool_result_chars)
            except ToolError as exc:
                error = str(exc)
            except Exception as exc:  # the model hears about it, the run goes on
                error = f"tool {tool.name!r} (plugin {plugin!r}) raised {type(exc).__name__}: {exc}"
        except ToolError as exc:
            error = str(exc)
        told = result
        withheld_by: str | None = None
        external = found is not None and getattr(found[0], "external", False)
        if result is not None and external and persona.guardrails.retrieval:
            told, withheld_by = await self.engine.oversight.screen_text(
                run, persona, result, step_id, ref=f"tool:{call.id}"
            )
        if told is not None:
            run.evidence.append(("tool", call.name, step_id, told))
        self.engine.emit(
            run,
            ToolCalled,
            step_id=step_id,
            call_id=call.id,
            tool=call.name,
            arguments=call.arguments,
            result=result,
            error=error,
            duration_ms=(time.perf_counter() - started) * 1000,
            withheld_by=withheld_by,
            source=(getattr(found[0], "source", None) or found[1]) if found else None,
        )
        if careful:
            await self.engine.flush()  # its answer is known for good: never sent again
        return _told(told, error, withheld_by, found[0] if found else None)

    async def _retrieve(
        self, run: _Run, persona: Persona, name: str, query: str, step_id: str
    ) -> list[tuple[str, Passage]]:
        entry = self.engine.registry.get("retrievers", name)
        waited, pause = 0.0, 0.05
        try:
            while True:
                try:
                    passages = await search_within(entry.value, query, k=persona.retrieve_k,
                                                   filters=persona.retrieve_filters)  # fmt: skip
                    break
                except StoreUnavailable:
                    # a read: asked again while the store is away, as long as a run waits
                    # for its log (past that, the run is suspended)
                    if waited >= self.engine.log.outage_s:
                        raise
                    await anyio.sleep(pause)
                    waited, pause = waited + pause, min(1.0, pause * 2)
        except PilothouseError:
            raise
        except Exception as exc:
            raise PluginError(
                entry.plugin, f"retriever {name!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        self.engine.emit(
            run, RetrievalDone, step_id=step_id, retriever=name, query=query, passages=passages
        )
        run.evidence += [("passage", p.id, step_id, p.text) for p in passages]
        return [(name, p) for p in passages]


def _answer_again(messages: list[Message], answer: str, why: str) -> list[Message]:
    """The conversation with the model's answer and a request to answer again."""
    return [*messages, Message(role="assistant", content=answer), Message(role="user", content=why)]


def _cut(result: str, limit: int) -> str:
    """A tool result as the model gets it and the log keeps it: at most ``limit``
    characters, and a note saying how much was left out."""
    if len(result) <= limit:
        return result
    return f"{result[:limit]}\n[... cut: {len(result) - limit} more characters]"


def _check_structured(
    output: str, persona: Persona, model_id: str, response: ModelResponse | None
) -> None:
    """Raise :class:`ModelError` when ``output`` is not JSON that validates against the
    persona's schema, naming the way the schema was asked for (the provider's output
    mode) and a reply cut off at the token limit (the likeliest cause of broken JSON)."""
    assert persona.output_schema is not None
    problem = output_problem(output, persona.output_schema)
    if problem is None:
        return
    mode = response.output_mode if response is not None else None
    how = f" (output mode {mode})" if mode else ""
    if response is not None and response.finish_reason == "length":
        problem += (
            f"; the reply was cut off at the output token limit (max_output_tokens ="
            f" {persona.max_output_tokens})"
        )
    raise ModelError(
        f"{model_id}{how} gave output that does not match the output schema: {problem}"
    )


def _told(told: str | None, error: str | None, withheld_by: str | None, tool: Any) -> str:
    """What the model reads of a tool call (an outside tool's result quoted as data)."""
    if error is not None:
        return f"error: {error}"
    if told is None:
        # the model learns that the result exists and why it may not read it, no more
        return f"error: the result was withheld: guardrail {withheld_by!r} flagged it"
    if getattr(tool, "external", False):
        return fence_result(told, tool.name, getattr(tool, "source", None) or "outside")
    return told


def _told_of(logged: ToolCalled, tool: Any) -> str:
    """What the model read of a call logged before the run was resumed."""
    told = None if logged.withheld_by else (logged.result or "")
    return _told(told, logged.error, logged.withheld_by, tool)
