"""The event log's vocabulary: typed, append-only records of everything a run does.

The monitor, the portal, the metrics and resume-after-crash are all views of
these events. Each is a pydantic model stored as JSON; ``type`` tells them
apart. ``seq`` orders the events of one run; the store adds a global ``id``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter
from pydantic_core import to_json

from .guardrails import Action, Stage
from .model import Message, ModelRequest, ToolCall, ToolSpec, Usage, json_bytes
from .retrieval import Passage

#: what a run id may be (it names the run's portal page and is typed in commands);
#: the engine makes 12 hex digits, and refuses a caller's id outside this
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

RunStatus = Literal["queued", "running", "waiting_for_human", "succeeded", "failed", "cancelled"]
#: the event types that end a run, and the status each leaves it in
FINAL_EVENTS: dict[str, str] = {
    "run_finished": "succeeded",
    "run_failed": "failed",
    "run_cancelled": "cancelled",
}
FINAL_STATUSES: frozenset[str] = frozenset(FINAL_EVENTS.values())
#: the statuses of a run some process should be executing (it is stalled when none is)
UNFINISHED_STATUSES = ("running", "waiting_for_human")
#: how every view colours a run status (CLI, monitor)
STATUS_COLOURS: dict[str, str] = {
    "succeeded": "green",
    "failed": "red",
    "running": "cyan",
    "queued": "blue",
    "waiting_for_human": "yellow",
    "cancelled": "magenta",
    #: not a stored status: running or waiting, but no process executes the run
    "stalled": "bright_red",
}


class Attribution(BaseModel):
    """One piece of evidence and its share of the output."""

    kind: str  # passage, tool or output
    ref: str
    step_id: str | None = None
    score: float
    excerpt: str


class BaseEvent(BaseModel):
    """Fields every event has."""

    type: str
    run_id: str
    seq: int = 0
    ts: float = 0.0
    step_id: str | None = None


class RunStarted(BaseEvent):
    """A run began: the crew, its input and the flow it follows."""

    type: Literal["run_started"] = "run_started"
    crew: str
    input: str
    flow: str
    model_override: str | None = None
    subject: str | None = None
    #: the ids of the facts about the subject recalled into the run (what it knew)
    recalled: list[str] = Field(default_factory=list)
    #: the run this one replays (``pilothouse replay``)
    replay_of: str | None = None
    #: where the run came from, as whoever started it says (``a2a.task``: the A2A task
    #: it answers); shown by ``show`` and the portal, never read by the engine
    labels: dict[str, str] = Field(default_factory=dict)


class RunQueued(BaseEvent):
    """A run waits in the queue for a worker (``pilothouse run --detach``)."""

    type: Literal["run_queued"] = "run_queued"
    crew: str
    input: str
    model_override: str | None = None
    subject: str | None = None


class RunResumed(BaseEvent):
    """A process picked the run up again from its log after an interruption."""

    type: Literal["run_resumed"] = "run_resumed"
    completed_steps: list[str]
    retried_steps: list[str]


class RunSuspended(BaseEvent):
    """The process executing the run stopped without ending it (a worker shut down):
    the run is not over, and the next worker resumes it from its last finished step."""

    type: Literal["run_suspended"] = "run_suspended"
    reason: str


class RunFinished(BaseEvent):
    """The run succeeded with this final output."""

    type: Literal["run_finished"] = "run_finished"
    output: str
    steps: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class OutputExplained(BaseEvent):
    """The evidence behind the run's final output, ranked by attribution score."""

    type: Literal["output_explained"] = "output_explained"
    evidence: list[Attribution]


class RunFailed(BaseEvent):
    """The run ended in failure; ``kind`` is the error class (``limit``, ``model``, ...)."""

    type: Literal["run_failed"] = "run_failed"
    kind: str
    error_type: str
    message: str
    plugin: str | None = None


class RunCancelled(BaseEvent):
    """The run was cancelled before it finished."""

    type: Literal["run_cancelled"] = "run_cancelled"
    reason: str = ""


class StepStarted(BaseEvent):
    """A persona's turn began on ``input``."""

    type: Literal["step_started"] = "step_started"
    persona: str
    input: str
    model: str


class StepFinished(BaseEvent):
    """A persona's turn ended with ``output`` (what the next step receives)."""

    type: Literal["step_finished"] = "step_finished"
    persona: str
    output: str
    input_tokens: int = 0
    output_tokens: int = 0
    handoff_to: str | None = None


class ContextPiece(BaseModel):
    """One piece of a context window and where it came from."""

    kind: Literal["instructions", "memory", "passage", "previous_output", "input", "other"]
    source: str
    ref: str | None = None
    tokens: int = 0


class ContextBuilt(BaseEvent):
    """Exactly what went into a persona's context window at a step."""

    type: Literal["context_built"] = "context_built"
    persona: str
    pieces: list[ContextPiece]
    tokens: int
    #: pieces left out to keep within the persona's context budget
    dropped: list[ContextPiece] = Field(default_factory=list)


#: finish reasons that leave a reply incomplete, and how each is shown
_STOP_NOTES = {
    "length": "cut off at the output token limit",
    "content_filter": "stopped by the provider's content filter",
}


#: a model call's wait for its endpoint's limits is mentioned from this long on
NOTED_WAIT_MS = 10.0


class ModelCalled(BaseEvent):
    """One model call: what was sent, what came back, tokens, cost and latency."""

    type: Literal["model_call"] = "model_call"
    model: str
    offline: bool = False
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    text: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    #: of ``latency_ms``, the time spent waiting for the provider's limits (not the model)
    queued_ms: float | None = None
    request_id: str | None = None
    #: why the model stopped, as the server said: ``stop``, ``tool_calls``, ``length``
    #: (cut off at the output token limit), ``content_filter``...
    finish_reason: str | None = None
    #: how the output schema was asked for, and why that way when it was not the first
    #: tried (see :attr:`pilothouse.ModelResponse.output_mode`)
    output_mode: str | None = None
    output_note: str | None = None
    #: the engine's id of the call (its trace span's, whose ``traceparent`` the request
    #: carried when an exporter propagates: :mod:`pilothouse.tracing`)
    call_id: str | None = None
    #: the rest of the request: with ``messages`` and ``tools``, all of it (see :meth:`request`)
    response_schema: dict[str, Any] | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    error: str | None = None

    @property
    def stop_note(self) -> str:
        """Why the reply may be incomplete, for people ("" when it ended normally)."""
        return _STOP_NOTES.get(self.finish_reason or "", "")

    @property
    def queue_note(self) -> str:
        """How long the call waited for the endpoint's limits, for people ("" if not)."""
        # An uncontended limit still yields to the event loop once, and a busy loop
        # takes a few ms to come back: below NOTED_WAIT_MS that is not worth a word.
        if self.queued_ms is None or self.queued_ms < NOTED_WAIT_MS:
            return ""
        return f"{self.queued_ms:.0f} ms of it waiting for the endpoint's limits"

    def request(self) -> ModelRequest:
        """The request this call sent, rebuilt from the event (``model`` is the full id).

        Replay keys recorded replies by :func:`~pilothouse.model.request_hash` of it:
        the hash is computed when a run is replayed, never stored, so both sides of
        the comparison always come from the same code.
        """
        return ModelRequest(
            model=self.model,
            messages=self.messages,
            tools=self.tools,
            response_schema=self.response_schema,
            max_output_tokens=self.max_output_tokens,
            temperature=self.temperature,
        )


class ModelDelta(BaseEvent):
    """A piece of streamed model text. Shown to observers, never stored."""

    type: Literal["model_delta"] = "model_delta"
    model: str
    text: str


class ModelSwitched(BaseEvent):
    """A persona's model failed (after its retries) and the next fallback takes over."""

    type: Literal["model_switched"] = "model_switched"
    persona: str
    failed: str
    next: str
    reason: str


class ToolCalled(BaseEvent):
    """A tool call the model asked for, with its validated arguments and result or error."""

    type: Literal["tool_call"] = "tool_call"
    call_id: str
    tool: str
    arguments: str
    result: str | None = None
    error: str | None = None
    duration_ms: float = 0.0
    #: the retrieval guardrail that kept this result from the model (logged whole here)
    withheld_by: str | None = None
    #: where the tool ran: ``mcp:SERVER`` or the plugin that registered it
    source: str | None = None


class ToolStarted(BaseEvent):
    """A call to a tool that is not safe to repeat, about to be sent: committed before it
    is, so that a run resumed after a crash knows the call may have run (a
    ``tool_call`` with the same ``call_id`` follows when it answered)."""

    type: Literal["tool_started"] = "tool_started"
    call_id: str
    tool: str
    arguments: str
    source: str | None = None


class RemoteTaskStarted(BaseEvent):
    """A model call handed its work to another system that keeps it (an A2A agent's
    task): committed as soon as it is known, so that a run resumed after a crash
    re-attaches to it instead of sending the work again."""

    type: Literal["remote_task"] = "remote_task"
    model: str
    #: the remote side's id of the work (an A2A task id)
    ref: str


class RetrievalDone(BaseEvent):
    """A retriever's ranked passages for a query."""

    type: Literal["retrieval"] = "retrieval"
    retriever: str
    query: str
    passages: list[Passage]


class GuardrailChecked(BaseEvent):
    """A guardrail's verdict on a step's input or output."""

    type: Literal["guardrail"] = "guardrail"
    guardrail: str
    stage: Stage
    action: Action
    reason: str = ""
    replacement: str | None = None
    risk: float = 0.0
    details: dict[str, Any] = Field(default_factory=dict)


class HandedOff(BaseEvent):
    """A persona handed the work to another."""

    type: Literal["handoff"] = "handoff"
    source: str
    target: str
    message: str = ""


class EscalationRaised(BaseEvent):
    """A step paused for a person: why, how risky, the evidence and the proposal."""

    type: Literal["escalation_raised"] = "escalation_raised"
    escalation_id: str
    persona: str
    #: ``guardrail`` (a flag), ``tool_approval``, ``tool_outcome_unknown`` (a call that
    #: may have run before a crash), ``input_required`` (a question from inside a step)
    #: or ``policy`` (the persona's own rule)
    kind: Literal["guardrail", "tool_approval", "tool_outcome_unknown", "input_required", "policy"]
    reason: str
    risk: float = 0.0
    evidence: dict[str, Any] = Field(default_factory=dict)
    proposed: str | None = None


class EscalationDecided(BaseEvent):
    """The decision the paused step continued with: who, when, what, and the note."""

    type: Literal["escalation_decided"] = "escalation_decided"
    escalation_id: str
    decision: Literal["approve", "edit", "reject"]
    by: str
    decided_at: float
    note: str = ""
    text: str | None = None


class LimitHit(BaseEvent):
    """A rule of engagement stopped the run."""

    type: Literal["limit_hit"] = "limit_hit"
    limit: str
    message: str


class MemoryWritten(BaseEvent):
    """A fact kept about the run's subject, recalled into later runs for the same subject."""

    type: Literal["memory_written"] = "memory_written"
    memory_id: str
    subject: str
    channel: str
    fact: str
    persona: str = ""


class ErrorRaised(BaseEvent):
    """An exception, with the plugin that raised it and its traceback."""

    type: Literal["error"] = "error"
    error_type: str
    message: str
    plugin: str | None = None
    traceback: str = ""


Event = Annotated[
    RunStarted
    | RunQueued
    | RunResumed
    | RunSuspended
    | RunFinished
    | OutputExplained
    | RunFailed
    | RunCancelled
    | StepStarted
    | StepFinished
    | ContextBuilt
    | ModelCalled
    | ModelDelta
    | ModelSwitched
    | ToolCalled
    | ToolStarted
    | RemoteTaskStarted
    | RetrievalDone
    | GuardrailChecked
    | HandedOff
    | EscalationRaised
    | EscalationDecided
    | LimitHit
    | MemoryWritten
    | ErrorRaised,
    Field(discriminator="type"),
]

event_adapter: TypeAdapter[Any] = TypeAdapter(Event)


def parse_event(data: str | bytes) -> BaseEvent:
    """Turn stored JSON back into its typed event."""
    return event_adapter.validate_json(data)


def event_json(event: BaseEvent) -> str:
    """The JSON the store keeps of ``event`` (what ``model_dump_json()`` returns)."""
    return json_bytes(event).decode()


#: the event types a store reads more of than a :class:`LogEntry` holds (a run
#: starting or ending, an escalation, a fact kept): few per run, so kept whole
KEPT_WHOLE: frozenset[str] = frozenset(
    {"run_started", "run_queued", "run_resumed", "escalation_raised", "escalation_decided",
     "memory_written", *FINAL_EVENTS}
)  # fmt: skip


@dataclass(slots=True)
class LogEntry:
    """What a :class:`~pilothouse.store.base.RunStore` is given of one event: where it goes,
    its JSON, and the few fields a run's summary row adds up.

    The typed event rides along only for the :data:`KEPT_WHOLE` types. A step's
    events are dropped once serialized, so a batch that waits for its commit
    holds strings rather than object graphs: with a thousand runs at work, the
    garbage collector had been spending half as much time as the log's writes.
    """

    run_id: str
    seq: int
    type: str
    step_id: str | None
    ts: float
    data: str
    persona: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    event: BaseEvent | None = None


def log_entry(event: BaseEvent, data: str | None = None) -> LogEntry:
    """The :class:`LogEntry` of ``event``; ``data``: its JSON, when already made."""
    entry = LogEntry(
        event.run_id, event.seq, event.type, event.step_id, event.ts,
        event_json(event) if data is None else data,
    )  # fmt: skip
    t = event.type
    if t == "model_call":
        usage = event.usage  # type: ignore[attr-defined]
        entry.input_tokens, entry.output_tokens = usage.input_tokens, usage.output_tokens
        entry.cost_usd = event.cost_usd or 0.0  # type: ignore[attr-defined]
    elif t == "step_started":
        entry.persona = event.persona  # type: ignore[attr-defined]
    elif t in KEPT_WHOLE:
        entry.event = event
    return entry


@functools.cache
def _layout(event_type: type[BaseEvent]) -> tuple[str, dict[str, Any], frozenset[str]]:
    """An event type's name, its fields in the order its JSON has them (with their
    defaults; None for the required ones), and the names of the required ones."""
    fields = event_type.model_fields
    template = {
        name: None if field.is_required() else field.get_default(call_default_factory=True)
        for name, field in fields.items()
    }
    required = frozenset(name for name, field in fields.items() if field.is_required())
    return template["type"], template, required - {"run_id"}


@functools.cache
def fast_type(event_type: type[BaseEvent]) -> str | None:
    """The ``type`` of the events of this class (``step_started``...), or None for the
    :data:`KEPT_WHOLE` ones, which :func:`entry_of` does not make."""
    name = _layout(event_type)[0]
    return None if name in KEPT_WHOLE else name


def entry_of(
    event_type: type[BaseEvent], run_id: str, seq: int, ts: float, fields: Mapping[str, Any]
) -> LogEntry:
    """The :class:`LogEntry` of an event given as its fields, without building it.

    Its JSON is what the typed event's ``model_dump_json()`` would be, made straight
    from the values (nested models serialize themselves): a third of the cost of
    validating the event first. The engine's own values need no validation, and a
    test holds every event type's JSON made this way against the typed event's.
    Not for the :data:`KEPT_WHOLE` types, whose typed event the store reads.
    """
    name, template, required = _layout(event_type)
    if not required <= fields.keys():
        raise TypeError(f"{name} event without {', '.join(sorted(required - fields.keys()))}")
    values = template.copy()  # in the JSON's order; updating keeps it
    values.update(fields)
    values["run_id"], values["seq"], values["ts"] = run_id, seq, ts
    entry = LogEntry(run_id, seq, name, values["step_id"], ts, to_json(values).decode())
    if name == "model_call":
        usage = values["usage"]
        entry.input_tokens, entry.output_tokens = usage.input_tokens, usage.output_tokens
        entry.cost_usd = values["cost_usd"] or 0.0
    elif name == "step_started":
        entry.persona = values["persona"]
    return entry
