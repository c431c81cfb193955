"""The engine's model calls: which model answers, the budget before a call, the log after.

A persona's model and its fallbacks resolve from ``provider:model`` specs (or
aliases) to :class:`~pilothouse.model.Model` instances, cached. Before each call,
the run's token and cost budgets are checked against an estimate of it: a call
that could exceed them is not made. Each call, answered or failed, is logged as a
``model_call`` event; a failing model hands the step to the next of the chain.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..crew import Persona
from ..errors import LimitExceeded, ModelError, NotFound, PilothouseError, PluginError
from ..events import BaseEvent, ModelCalled, ModelDelta, ModelSwitched, RemoteTaskStarted
from ..model import (
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    _delta_sink,
    _remote_sink,
    _resumed_remote,
    estimate_request_tokens,
)
from ..registry import Registry
from ..settings import Settings
from ..store.eventlog import EventLog
from ..tracing import enter_call, leave_call
from .runstate import Replaying, _Run


class Host(Protocol):
    """What model calls need of the engine they serve."""

    registry: Registry
    settings: Settings
    log: EventLog
    replaying: Replaying | None
    #: model requests carry their call's ``traceparent`` (an exporter traces)
    propagate: bool

    def emit(self, run: _Run, event_type: type[BaseEvent], **fields: Any) -> None:
        """Log an event of ``run``."""

    async def flush(self) -> None:
        """Commit what was emitted."""


class ModelCalls:
    """Resolves, budgets, calls and logs models, for one engine."""

    def __init__(self, engine: Host) -> None:
        self.engine = engine
        self._models: dict[str, Model] = {}
        #: model id -> the plugin that registered its provider (named when it raises)
        self._model_plugins: dict[str, str] = {}

    def models_for(self, run: _Run, persona: Persona) -> list[Model]:
        """The persona's model then its fallbacks; an override replaces them all."""
        if run.model_override:
            model = self.resolve(run.model_override)
            if self.engine.replaying is not None and self.engine.replaying.fallbacks:
                return [model] * (1 + len(persona.fallbacks))
            return [model]
        specs = [persona.model or self.engine.settings.default_model, *persona.fallbacks]
        return [self.resolve(spec) for spec in specs]

    def resolve(self, spec: str) -> Model:
        """The model for ``alias`` or ``provider[:name]``; instances are cached."""
        cached = self._models.get(spec)
        if cached is not None:
            return cached
        full = self.engine.settings.model_aliases.get(spec, spec)
        provider_name, _, model_name = full.partition(":")
        entry = self.engine.registry.get("models", provider_name)
        provider = entry.value
        model_name = model_name or provider.default_model() or ""
        if not model_name:
            raise NotFound(
                f"model provider {provider_name!r} needs a model name: {provider_name}:NAME"
            )
        try:
            model = provider.model(model_name)
        except PilothouseError:
            raise
        except Exception as exc:
            raise PluginError(entry.plugin, f"provider {provider_name!r} raised {exc!r}") from exc
        self._models[spec] = model
        self._model_plugins[model.id] = entry.plugin
        return model

    async def call_with_fallbacks(
        self,
        run: _Run,
        persona: Persona,
        models: list[Model],
        request: ModelRequest,
        step_id: str,
    ) -> tuple[list[Model], ModelResponse]:
        """Call the first model; when it fails (after its own retries), the next.

        Returns the models still in play (a switch sticks for the rest of the step).
        """
        for i, model in enumerate(models):
            if request.model != model.name:
                request = request.model_copy(update={"model": model.name})
            try:
                return models[i:], await self.call(run, model, request, step_id)
            except (ModelError, PluginError) as exc:
                if i + 1 == len(models):
                    raise
                self.engine.emit(
                    run,
                    ModelSwitched,
                    step_id=step_id,
                    persona=persona.name,
                    failed=model.id,
                    next=models[i + 1].id,
                    reason=str(exc),
                )
        raise AssertionError("unreachable: a persona has at least one model")

    async def call(
        self, run: _Run, model: Model, request: ModelRequest, step_id: str
    ) -> ModelResponse:
        """One call of ``model``, within the run's budgets, logged whether it answers or
        fails; a plugin's exception is raised as :class:`PluginError` naming the plugin."""
        self._check_budget(run, model, request)
        # what every model-call event says, whether the call worked or not
        call = (
            {
                "step_id": step_id,
                "model": model.id,
                "offline": model.offline,
                "messages": request.messages,
                "tools": request.tools,
                "response_schema": request.response_schema,
                "max_output_tokens": request.max_output_tokens,
                "temperature": request.temperature,
            }
            if self.engine.log.active
            else {}
        )

        # a call id names the call's span, whose traceparent the request then carries
        traced = enter_call(run.id, call.setdefault("call_id", secrets.token_hex(8))) if (
            self.engine.propagate
        ) else None  # fmt: skip
        # deltas go to observers only: with none, the sink stays unset (None)
        sink = self._delta_sink(run, model, step_id) if self.engine.log.observed else None
        token = _delta_sink.set(sink) if sink is not None else None
        remote = _remote_sink.set(functools.partial(self._held_remotely, run, step_id, model.id))
        resumed = _resumed_remote.set(run.remote_refs.pop((step_id, model.id), None))
        started = time.perf_counter()
        try:
            response = await model.complete(request)
            if not isinstance(response, ModelResponse):
                raise ModelError(
                    f"model {model.id} returned {type(response).__name__}, not a ModelResponse"
                )
        except Exception as exc:
            latency = (time.perf_counter() - started) * 1000
            error = f"{type(exc).__name__}: {exc}"
            self.engine.emit(run, ModelCalled, **call, latency_ms=latency, error=error)
            if isinstance(exc, PilothouseError):
                raise
            plugin = self._model_plugins.get(model.id, model.provider)
            raise PluginError(plugin, f"model {model.id} raised {error}") from exc
        finally:  # also on cancellation: deltas and the trace belong to this call only
            _remote_sink.reset(remote)
            _resumed_remote.reset(resumed)
            if token is not None:
                _delta_sink.reset(token)
            if traced is not None:
                leave_call(traced)
        usage = response.usage
        cost = response.cost_usd
        if cost is None:
            cost = model.estimate_cost(usage.input_tokens, usage.output_tokens)
        run.input_tokens += usage.input_tokens
        run.output_tokens += usage.output_tokens
        run.cost_usd += cost or 0.0
        self.engine.emit(
            run,
            ModelCalled,
            **call,
            text=response.text,
            tool_calls=response.tool_calls,
            usage=usage,
            cost_usd=cost,
            latency_ms=(time.perf_counter() - started) * 1000,
            ttft_ms=response.ttft_ms,
            queued_ms=response.queued_ms,
            request_id=response.request_id,
            finish_reason=response.finish_reason,
            output_mode=response.output_mode,
            output_note=response.output_note,
        )
        return response

    async def _held_remotely(self, run: _Run, step_id: str, model: str, ref: str) -> None:
        """What :func:`pilothouse.note_remote_task` does: the remote work's id, logged
        and committed before the call goes on."""
        self.engine.emit(run, RemoteTaskStarted, step_id=step_id, model=model, ref=ref)
        await self.engine.flush()

    def _delta_sink(self, run: _Run, model: Model, step_id: str) -> Callable[[str], None]:
        """What :func:`pilothouse.model.emit_delta` calls during this model call."""

        def show_delta(text: str) -> None:
            delta = ModelDelta(run_id=run.id, seq=run.seq, ts=time.time(), step_id=step_id,
                               model=model.id, text=text)  # fmt: skip
            self.engine.log.emit(delta, persist=False)

        return show_delta

    def _check_budget(self, run: _Run, model: Model, request: ModelRequest) -> None:
        limits = run.crew.limits
        if limits.max_tokens is None and limits.max_cost_usd is None:
            return
        est_in = estimate_request_tokens(request)
        est_out = request.max_output_tokens or 0
        if limits.max_tokens is not None and run.tokens + est_in + est_out > limits.max_tokens:
            raise LimitExceeded(
                "max_tokens",
                f"the next call to {model.id} could bring the run to"
                f" {run.tokens + est_in + est_out}"
                f" tokens, over max_tokens = {limits.max_tokens}; it was not made",
            )
        if limits.max_cost_usd is not None:
            est_cost = model.estimate_cost(est_in, est_out) or 0.0
            if run.cost_usd + est_cost > limits.max_cost_usd:
                raise LimitExceeded(
                    "max_cost_usd",
                    f"the next call to {model.id} could bring the run to"
                    f" ${run.cost_usd + est_cost:.4f}, over max_cost_usd = {limits.max_cost_usd};"
                    " it was not made",
                )

    async def ask(
        self, run: _Run, step_id: str, spec: str, messages: list[Message], **request: Any
    ) -> ModelResponse:
        """A model call a plugin makes inside a step (a guardrail's judge, say)."""
        model = self.resolve(spec)
        call = ModelRequest(model=model.name, messages=messages, **request)
        return await self.call(run, model, call, step_id)
