"""What a chat model is to pilothouse: messages in, a reply (text or tool calls) out.

A provider plugin (see ``register_models`` in :mod:`pilothouse.hookspecs`)
turns a model name into a :class:`Model`; the engine only ever calls
:meth:`Model.complete`.
"""

from __future__ import annotations

import abc
import contextvars
import hashlib
import math
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(BaseModel):
    """A call the model asks for. ``arguments`` is the raw JSON text the model wrote."""

    id: str
    name: str
    arguments: str = "{}"


class Message(BaseModel):
    """One chat message, in the shape the OpenAI chat-completions protocol uses."""

    role: Role
    content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class ToolSpec(BaseModel):
    """A tool as offered to a model: name, description and JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


class ModelRequest(BaseModel):
    """Everything a model call sends. Logged whole in the model-call event."""

    model: str
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    response_schema: dict[str, Any] | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None


class Usage(BaseModel):
    """Token counts of one call. ``estimated`` is true when the server did not say."""

    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False


class ModelResponse(BaseModel):
    """A model's reply: text, or tool calls to run before it answers."""

    text: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = None
    finish_reason: str | None = None
    request_id: str | None = None
    #: how the provider asked for the output schema (``json_schema``, ``json_object``,
    #: ``tool``, ``prompt``: see :mod:`pilothouse.structured`); None without a schema
    output_mode: str | None = None
    #: why that mode and not the first one tried, when the provider fell back
    output_note: str | None = None
    #: milliseconds from sending the request to the first streamed token
    ttft_ms: float | None = None
    #: milliseconds the request waited for the provider's own limits (concurrency,
    #: requests or tokens per minute) before it was sent; part of the call's latency
    queued_ms: float | None = None


def json_bytes(value: BaseModel, *, exclude: set[str] | None = None) -> bytes:
    """``value.model_dump_json(exclude=...)``, encoded, at about half the cost.

    It goes to the model's serializer directly: ``model_dump_json`` sorts out a dozen
    keyword options first, which cost as much as the JSON of a logged event.
    """
    return type(value).__pydantic_serializer__.to_json(value, exclude=exclude)


def request_hash(request: ModelRequest) -> str:
    """A stable digest of what a request asks, whatever model answers it (for replay)."""
    # pydantic writes fields in a fixed order; dicts inside (schemas) keep the
    # order the crew gave them, which is the same on every run of that crew.
    return hashlib.sha256(json_bytes(request, exclude={"model"})).hexdigest()[:24]


_delta_sink: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar(
    "pilothouse_delta_sink", default=None
)


def emit_delta(text: str) -> None:
    """Called by streaming providers for each piece of text as it arrives.

    The engine routes it to event observers (the monitor shows it live); it is
    not written to the run store. Outside a model call it does nothing.
    """
    sink = _delta_sink.get()
    if sink is not None and text:
        sink(text)


#: set by the engine around a model call: where ``note_remote_task`` goes, and the
#: remote work a resumed run's call had started before the process stopped
_remote_sink: contextvars.ContextVar[Callable[[str], Awaitable[None]] | None] = (
    contextvars.ContextVar("pilothouse_remote_sink", default=None)
)
_resumed_remote: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pilothouse_resumed_remote", default=None
)


async def note_remote_task(ref: str) -> None:
    """Called by a provider whose call another system now holds (an A2A task id): the
    engine logs and commits it before the call goes on, so that a run resumed after a
    crash gets it back from :func:`resumed_remote_task` and re-attaches instead of
    sending the work again. Outside a model call it does nothing."""
    sink = _remote_sink.get()
    if sink is not None and ref:
        await sink(ref)


def resumed_remote_task() -> str | None:
    """In a resumed run, the remote work this same call had started before the process
    stopped (what :func:`note_remote_task` was given); None otherwise."""
    return _resumed_remote.get()


def estimate_tokens(text: str) -> int:
    """A provider-independent token estimate: about four characters a token."""
    return math.ceil(len(text) / 4) if text else 0


def estimate_request_tokens(request: ModelRequest) -> int:
    """Estimate the input tokens of a request (used for budgets before a call is made)."""
    total = 0
    for m in request.messages:
        total += 4 + estimate_tokens(m.content or "")
        for call in m.tool_calls or ():
            total += estimate_tokens(call.name) + estimate_tokens(call.arguments)
    for spec in request.tools:
        total += estimate_tokens(spec.name) + estimate_tokens(spec.description) + 20
    return total


class Model(abc.ABC):
    """A chat model. Subclass it in a provider plugin.

    ``id`` is ``provider:name``; ``offline`` marks a model that never leaves
    the machine (it is labelled so wherever it appears).
    """

    provider: str = ""
    name: str = ""
    offline: bool = False

    @property
    def id(self) -> str:
        """The model's full id, ``provider:name``."""
        return f"{self.provider}:{self.name}"

    @abc.abstractmethod
    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send one request and return the reply; raise :class:`~pilothouse.errors.ModelError`."""

    def estimate_cost(self, input_tokens: int, output_tokens: int) -> float | None:
        """The cost of a call of this size in USD, or None when unknown (budgets skip it)."""
        return None


class ModelProvider(abc.ABC):
    """Makes models from names. Registered through the ``register_models`` hook."""

    #: the prefix in ``provider:model`` ids, e.g. ``offline`` or ``openai``
    name: str = ""

    @abc.abstractmethod
    def model(self, name: str) -> Model:
        """Return the model called ``name`` (raise :class:`~pilothouse.errors.NotFound`)."""

    def default_model(self) -> str | None:
        """The model name used when a persona names only the provider, if any."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional, most providers hold nothing
        """Release connections and other resources; called when the runtime closes."""
