"""Personas and crews: who works on a run, in what order, under which rules.

These are plain pydantic models, so a crew can come from a plugin (Python) or
from a TOML crew file (:mod:`pilothouse.crewfile`) and be validated the same way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .retrieval import Filters

Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]


#: what the name of every handoff tool starts with: a persona hands its work on by
#: calling ``transfer_to_<name>`` (model providers that plan offline read it too)
HANDOFF_PREFIX = "transfer_to_"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GuardrailNames(_Strict):
    """Names of the guardrails applied to a persona's input, output and retrieved passages.

    A passage a ``retrieval`` guardrail does not pass is left out of the context.
    """

    input: list[str] = Field(default_factory=list)
    output: list[str] = Field(default_factory=list)
    retrieval: list[str] = Field(default_factory=list)


class Persona(_Strict):
    """One agent: instructions, model, tools, retrievers and guardrails."""

    name: Name
    instructions: str = ""
    description: str = ""
    #: ``alias`` or ``provider:model``; None means the workspace's default model
    model: str | None = None
    #: models to try, in order, when the primary one fails
    fallbacks: list[str] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)
    retrievers: list[str] = Field(default_factory=list)
    #: how many passages each retriever contributes to the context window
    retrieve_k: int = Field(default=4, ge=0, le=100)
    #: what its retrievals keep (source, tag, metadata), pushed down to every retriever
    #: it lists; one that cannot filter fails the step rather than answer unfiltered
    retrieve_filters: Filters | None = None
    guardrails: GuardrailNames = Field(default_factory=GuardrailNames)
    #: personas this one may hand work to in a ``handoff`` flow
    handoffs: list[str] = Field(default_factory=list)
    #: a JSON schema the persona's output must follow (structured output)
    output_schema: dict[str, Any] | None = None
    max_output_tokens: int = Field(default=1024, gt=0)
    #: escalate when this field of the structured output is above ``risk_threshold``
    risk_field: str | None = None
    risk_threshold: float = Field(default=0.7, ge=0, le=1)
    #: a field of the structured output listing facts to remember about the run's
    #: subject (strings, or objects with ``fact`` and ``channel``)
    memory_field: str | None = None
    #: the channel facts from ``memory_field`` are filed under (email, chat, crm...)
    memory_channel: str = "run"
    #: estimated tokens the context window may hold; pieces are dropped to fit
    #: (see pilothouse.engine.context for the policy)
    context_budget: int | None = Field(default=None, gt=0)
    #: the order of the quoted sections after the instructions
    context_order: list[Literal["memory", "passages"]] = Field(
        default_factory=lambda: ["memory", "passages"]
    )
    #: what goes first when the window is over budget
    context_drop: list[Literal["passages", "memory", "previous_output"]] = Field(
        default_factory=lambda: ["passages", "memory", "previous_output"]
    )
    temperature: float | None = Field(default=None, ge=0, le=2)

    @field_validator("output_schema")
    @classmethod
    def _a_valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        # a schema no validator can read would fail every step that uses it: say so now
        if schema is not None:
            from .structured import schema_error

            problem = schema_error(schema)
            if problem is not None:
                raise ValueError(problem)
        return schema


class Sequential(_Strict):
    """Each step gets the previous step's output. A list inside ``steps`` fans out:
    its personas run at once on the same input and their outputs are joined."""

    type: Literal["sequential"] = "sequential"
    steps: list[str | list[str]] = Field(min_length=1)


class Parallel(_Strict):
    """Every branch works on the run's input at once; ``join`` (optional) merges them."""

    type: Literal["parallel"]
    branches: list[str] = Field(min_length=1)
    join: str | None = None


class Handoff(_Strict):
    """``start`` answers or hands the work to another persona (``transfer_to_<name>``);
    the run ends when a persona answers without handing off."""

    type: Literal["handoff"]
    start: str
    #: who may hand off to whom; a persona not named here uses its own ``handoffs``
    routes: dict[str, list[str]] = Field(default_factory=dict)


class Supervisor(_Strict):
    """``supervisor`` hands each part of the work to one of ``workers``
    (``transfer_to_<name>``) and gets that worker's output back; it hands out the next
    part, or answers, which ends the run. Each delegation counts as a handoff."""

    type: Literal["supervisor"]
    supervisor: str
    workers: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _not_its_own_worker(self) -> Supervisor:
        if self.supervisor in self.workers:
            raise ValueError(f"{self.supervisor!r} cannot be one of its own workers")
        return self


Flow = Annotated[Sequential | Parallel | Handoff | Supervisor, Field(discriminator="type")]


class EscalationRules(_Strict):
    """What happens around a paused step while it waits for a person."""

    #: seconds to wait for a decision; None waits forever
    timeout_s: float | None = Field(default=None, ge=0)
    #: what the crew decides when nobody did in time (logged as the policy's decision)
    on_timeout: Literal["wait", "approve", "reject"] = "wait"
    #: a rejection fails the run, or sends the step back to the persona with the note
    on_reject: Literal["fail", "revise"] = "fail"
    #: how many times one step may be sent back before the run fails
    max_revisions: int = Field(default=2, ge=0)


class Limits(_Strict):
    """Rules of engagement. Hitting any ends the run with the limit's name logged."""

    max_steps: int = Field(default=25, gt=0)
    max_handoffs: int = Field(default=10, ge=0)
    #: model round trips within one step (tool calls and answers)
    max_tool_rounds: int = Field(default=8, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    #: the same tool with the same arguments this many times in a run is a loop
    max_identical_tool_calls: int = Field(default=3, gt=0)
    #: a tool result longer than this is cut (with a note) before the model gets it:
    #: a 5 MB page fetched by a tool would otherwise overflow every later call
    max_tool_result_chars: int = Field(default=20_000, gt=0)
    #: times a reply that does not fit the persona's output schema is sent back to the
    #: model with what was wrong, before the step fails
    max_schema_retries: int = Field(default=1, ge=0)
    #: round trips between the same two personas before it counts as ping-pong
    max_ping_pong: int = Field(default=2, gt=0)
    #: a step whose process died this many times is not started again (a poison step)
    max_step_interruptions: int = Field(default=5, gt=0)


class Crew(_Strict):
    """Named personas plus the flow between them and the limits of a run."""

    name: Name
    description: str = ""
    flow: Flow
    #: personas defined with the crew; others are looked up among registered ones
    personas: dict[str, Persona] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    #: what a ``flag`` verdict does when no human-on-the-loop layer takes it
    on_flag: Literal["escalate", "continue", "fail"] = "escalate"
    escalation: EscalationRules = Field(default_factory=EscalationRules)

    @model_validator(mode="before")
    @classmethod
    def _fill_in(cls, data: Any) -> Any:
        # A flow without a type is sequential.
        if isinstance(data, dict) and isinstance(data.get("flow"), dict):
            data = {**data, "flow": {"type": "sequential", **data["flow"]}}
        # In a crew file personas are tables keyed by name; fill in ``name``.
        if isinstance(data, dict) and isinstance(data.get("personas"), dict):
            personas = {}
            for key, value in data["personas"].items():
                if isinstance(value, dict) and "name" not in value:
                    value = {"name": key, **value}
                personas[key] = value
            data = {**data, "personas": personas}
        return data

    def persona_names(self) -> list[str]:
        """Every persona the flow names, in order of first appearance."""
        flow = self.flow
        names: list[str] = []
        if isinstance(flow, Sequential):
            for step in flow.steps:
                names.extend([step] if isinstance(step, str) else step)
        elif isinstance(flow, Parallel):
            names.extend(flow.branches)
            if flow.join:
                names.append(flow.join)
        elif isinstance(flow, Supervisor):
            names += [flow.supervisor, *flow.workers]
        else:
            names.append(flow.start)
            for source, targets in flow.routes.items():
                names.append(source)
                names.extend(targets)
            for persona in self.personas.values():
                names.extend(persona.handoffs)
        return list(dict.fromkeys(names))
