"""A run's events as OpenTelemetry spans, following the GenAI semantic conventions.

One trace per run: a root span for the crew's run (``invoke_workflow {crew}``), a child
per step (``invoke_agent {persona}``), under it one per model call (``chat {model}``),
tool call (``execute_tool {tool}``) and retrieval. Guardrail verdicts, escalations and
decisions, handoffs, model switches and limit hits become events of the span they
happened in; a failed run or call gets an error status. Times are the events' own.

Content (prompts, replies, tool arguments and results, inputs and outputs) is left out
unless ``content`` is on, and then goes through the redactor first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from pilothouse import span_id, trace_id

SCOPE = InstrumentationScope("pilothouse", "0.1.0")
#: what ends a run's root span, and the status it ends with
_ENDINGS = {"run_finished": "succeeded", "run_failed": "failed", "run_cancelled": "cancelled"}


@dataclass
class _Open:
    """A span being assembled."""

    key: str
    name: str
    start: float
    parent: str | None
    kind: SpanKind = SpanKind.INTERNAL
    end: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    error: str | None = None


def run_spans(
    events: Sequence[Any],
    *,
    resource: Resource,
    content: bool = False,
    redact: Callable[[str], str] = lambda text: text,
) -> list[ReadableSpan]:
    """The spans of one run from its logged events (in order). A run that has not ended
    gets its root span ended at its last event."""
    if not events:
        return []
    run_id = events[0].run_id
    spans: dict[str, _Open] = {}
    steps: dict[str, str] = {}  # step_id -> key of its latest attempt's span

    def text(value: str | None) -> str:
        return redact(value or "")

    root = _Open("run", "invoke_workflow run", events[0].ts, None)
    root.attributes |= {"gen_ai.operation.name": "invoke_workflow",
                        "gen_ai.conversation.id": run_id}  # fmt: skip
    spans["run"] = root

    def parent_of(event: Any) -> _Open:
        key = steps.get(event.step_id or "")
        return spans[key] if key is not None else root

    for e in events:
        t = e.type
        if t in ("run_started", "run_queued"):
            root.name = f"invoke_workflow {e.crew}"
            root.attributes["pilothouse.crew"] = e.crew
            if getattr(e, "subject", None):
                root.attributes["pilothouse.subject"] = e.subject
            for key, value in (getattr(e, "labels", None) or {}).items():
                root.attributes[f"pilothouse.label.{key}"] = text(value)  # a2a.task, say
            if content:
                root.attributes["pilothouse.input"] = text(e.input)
        elif t == "step_started":
            key = f"step:{e.seq}"
            span = _Open(key, f"invoke_agent {e.persona}", e.ts, "run")
            span.attributes |= {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": e.persona,
                "gen_ai.agent.id": f"{run_id}/{e.step_id}",
                "gen_ai.conversation.id": run_id,
                "gen_ai.request.model": e.model.split(":", 1)[-1],
                "pilothouse.step_id": e.step_id or "",
            }
            if content:
                span.attributes["pilothouse.input"] = text(e.input)
            spans[key] = span
            steps[e.step_id or ""] = key
        elif t == "step_finished":
            span = parent_of(e)
            span.end = e.ts
            span.attributes |= {"gen_ai.usage.input_tokens": e.input_tokens,
                                "gen_ai.usage.output_tokens": e.output_tokens}  # fmt: skip
            if e.handoff_to:
                span.attributes["pilothouse.handoff_to"] = e.handoff_to
            if content:
                span.attributes["pilothouse.output"] = text(e.output)
        elif t == "model_call":
            span = _model_span(e, parent_of(e).key, content, text)
            spans[span.key] = span
        elif t == "tool_call":
            span = _Open(f"event:{e.seq}", f"execute_tool {e.tool}", e.ts - e.duration_ms / 1000,
                         parent_of(e).key, end=e.ts)  # fmt: skip
            span.attributes |= {"gen_ai.operation.name": "execute_tool",
                                "gen_ai.tool.name": e.tool, "gen_ai.tool.call.id": e.call_id,
                                "gen_ai.tool.type": _tool_type(e.source)}  # fmt: skip
            if e.source:
                span.attributes["pilothouse.tool.source"] = e.source
            if content:
                span.attributes["gen_ai.tool.call.arguments"] = text(e.arguments)
                span.attributes["gen_ai.tool.call.result"] = text(e.result)
            span.error = e.error and ("tool error" if not content else text(e.error))
            spans[span.key] = span
        elif t == "retrieval":
            span = _Open(f"event:{e.seq}", f"retrieval {e.retriever}", e.ts, parent_of(e).key,
                         end=e.ts)  # fmt: skip
            span.attributes |= {"gen_ai.operation.name": "retrieval",
                                "gen_ai.data_source.id": e.retriever,
                                "pilothouse.passage_ids": [p.id for p in e.passages]}  # fmt: skip
            if content:
                span.attributes["pilothouse.query"] = text(e.query)
            spans[span.key] = span
        elif t in _EVENTS:
            name, fields = _EVENTS[t]
            attributes = {f"pilothouse.{f}": getattr(e, f) for f in fields
                          if getattr(e, f, None) is not None}  # fmt: skip
            if content and t in _WORDS:
                attributes["pilothouse.text"] = text(getattr(e, _WORDS[t], "") or "")
            target = root if t == "limit_hit" else parent_of(e)
            target.events.append(Event(name, attributes, timestamp=_ns(e.ts)))
        elif t in _ENDINGS:
            root.end = e.ts
            root.attributes["pilothouse.status"] = _ENDINGS[t]
            if t == "run_finished":
                root.attributes |= {"gen_ai.usage.input_tokens": e.input_tokens,
                                    "gen_ai.usage.output_tokens": e.output_tokens,
                                    "pilothouse.cost_usd": e.cost_usd}  # fmt: skip
                if content:
                    root.attributes["pilothouse.output"] = text(e.output)
            elif t == "run_failed":
                root.error = f"{e.kind}: {text(e.message)[:300]}"
                root.attributes["error.type"] = e.error_type
            else:
                root.error = f"cancelled: {text(e.reason)[:300]}"
    last = events[-1].ts
    for span in spans.values():  # an interrupted step or a run still going: ends where it stands
        if span.end is None:
            span.end = last
            if span is not root:
                span.attributes["pilothouse.interrupted"] = True
    return [_readable(run_id, span, resource) for span in spans.values()]


#: event types that become span events: (event name, fields kept as attributes)
_EVENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "guardrail": ("pilothouse.guardrail", ("guardrail", "stage", "action", "risk")),
    "escalation_raised": ("pilothouse.escalation", ("escalation_id", "kind", "risk")),
    "escalation_decided": ("pilothouse.decision", ("escalation_id", "decision", "by")),
    "handoff": ("pilothouse.handoff", ("source", "target")),
    "model_switched": ("pilothouse.model_switched", ("failed", "next")),
    "limit_hit": ("pilothouse.limit", ("limit",)),
    "run_resumed": ("pilothouse.resumed", ()),
    "run_suspended": ("pilothouse.suspended", ()),
}
#: the field of such an event that is content (kept only with content capture on)
_WORDS = {"guardrail": "reason", "escalation_raised": "reason", "escalation_decided": "note",
          "handoff": "message", "model_switched": "reason", "limit_hit": "message",
          "run_suspended": "reason"}  # fmt: skip


def _model_span(e: Any, parent: str, content: bool, text: Callable[[str | None], str]) -> _Open:
    provider, _, model = e.model.partition(":")
    key = f"call:{e.call_id}" if getattr(e, "call_id", None) else f"event:{e.seq}"
    span = _Open(key, f"chat {model or provider}", e.ts - e.latency_ms / 1000,
                 parent, kind=SpanKind.CLIENT, end=e.ts)  # fmt: skip
    a = span.attributes
    a |= {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider,
          "gen_ai.request.model": model or provider, "gen_ai.response.model": model or provider,
          "gen_ai.usage.input_tokens": e.usage.input_tokens,
          "gen_ai.usage.output_tokens": e.usage.output_tokens}  # fmt: skip
    optional = {
        "gen_ai.response.id": e.request_id,
        "gen_ai.request.max_tokens": e.max_output_tokens,
        "gen_ai.request.temperature": e.temperature,
        "pilothouse.cost_usd": e.cost_usd,
        "pilothouse.time_to_first_token_ms": e.ttft_ms,
        "pilothouse.queued_ms": e.queued_ms,
        "pilothouse.output_mode": getattr(e, "output_mode", None),
    }
    a |= {k: v for k, v in optional.items() if v is not None}
    if e.finish_reason:
        a["gen_ai.response.finish_reasons"] = [e.finish_reason]
    if e.usage.estimated:
        a["pilothouse.usage_estimated"] = True
    if e.error:
        a["error.type"] = e.error.split(":", 1)[0]
        span.error = "the call failed" if not content else text(e.error)[:300]
    if content:
        messages = [{"role": m.role, "content": text(m.content)} for m in e.messages]
        a["gen_ai.input.messages"] = json.dumps(messages, ensure_ascii=False)
        reply = {"role": "assistant", "content": text(e.text),
                 "tool_calls": [{"name": c.name, "arguments": text(c.arguments)}
                                for c in e.tool_calls]}  # fmt: skip
        a["gen_ai.output.messages"] = json.dumps([reply], ensure_ascii=False)
    return span


def _readable(run_id: str, span: _Open, resource: Resource) -> ReadableSpan:
    trace = trace_id(run_id)
    sampled = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(trace, span_id(run_id, span.key), is_remote=False, trace_flags=sampled)
    parent = None
    if span.parent is not None:
        parent = SpanContext(trace, span_id(run_id, span.parent), False, trace_flags=sampled)
    status = Status(StatusCode.ERROR, span.error) if span.error else Status(StatusCode.UNSET)
    end = span.end if span.end is not None else span.start
    return ReadableSpan(
        name=span.name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=span.attributes,
        events=span.events,
        kind=span.kind,
        status=status,
        start_time=_ns(span.start),
        end_time=_ns(max(end, span.start)),
        instrumentation_scope=SCOPE,
    )


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _tool_type(source: str | None) -> str:
    """``extension`` for a tool another process serves (an MCP server), else
    ``function`` (the GenAI conventions' words)."""
    return "extension" if source and source.startswith("mcp:") else "function"
