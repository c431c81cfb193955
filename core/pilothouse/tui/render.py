"""How events, escalations and failures look on screen, as Rich renderables.

Everything a model, a tool or a user wrote is untrusted: it goes into
:class:`rich.text.Text` as plain text (never parsed as markup) and through the
redactor first, so neither a ``[link=...]`` in a reply nor an API key in a
prompt reaches the screen as such.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..decision import (
    Change,
    DecisionView,
    Segment,
    as_lines,
    compact,
    decision_view,
    redacted,
)
from ..events import FINAL_STATUSES, STATUS_COLOURS, BaseEvent
from ..store.base import Escalation, RunSummary
from .feed import Failure

Redact = Callable[[str], str]

ACTION_STYLES = {"pass": "green", "fix": "blue", "flag": "yellow", "block": "red"}


def status_text(status: str, *, check: str | None = None) -> Text:
    """A run status, coloured, and marked ``audit`` or ``replay`` when the run checks a
    crew rather than doing the fleet's work."""
    label = "waiting" if status == "waiting_for_human" else status
    text = Text(label, style=STATUS_COLOURS.get(status, ""))
    if check:
        text.append(f" {check}", style="dim")
    return text


def plain(text: str | None, redact: Redact, limit: int | None = None) -> Text:
    """Untrusted text as a Rich :class:`Text` (no markup), redacted, optionally cut."""
    value = redact(text or "")
    if limit is not None:
        value = " ".join(value.split())
        if len(value) > limit:
            value = value[: limit - 1] + "…"
    return Text(value)


def elapsed(run: RunSummary, now: float, *, coarse: bool = False) -> str:
    """How long a run has taken (so far, while it goes on). ``coarse`` drops the
    seconds past the first minute (the fleet: a cell that changes once a minute
    is not redrawn every second)."""
    end = now if run.status in ("running", "waiting_for_human", "queued") else run.updated
    seconds = max(0.0, end - run.created)
    if seconds < 60:
        return f"{int(seconds)}s" if coarse else f"{seconds:.1f}s"
    if seconds < 3600:
        if coarse:
            return f"{int(seconds // 60)}m"
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def progress(run: RunSummary) -> str:
    """Where a run is: the step at work and how many are done while it goes on
    ("at step 4 (compliance), 3 steps done"), how many it took once it ended."""
    done = f"{run.steps} step{'s' * (run.steps != 1)}"
    if run.status in FINAL_STATUSES:
        return done
    if run.current_step and run.current_persona:
        return f"at step {run.current_step} ({run.current_persona}), {done} done"
    return f"{done} done"


def clock(ts: float) -> str:
    """A timestamp as local ``HH:MM:SS``."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def summary(event: BaseEvent, redact: Redact) -> Text:
    """One line saying what an event was, for the run's timeline."""
    e: Any = event
    t = event.type
    if t == "run_started":
        labels = ", ".join(f"{k}={v}" for k, v in sorted((e.labels or {}).items()))
        came = Text.assemble(" [", plain(labels, redact, 80), "]") if labels else ""
        return Text.assemble(f"{e.crew} ({e.flow}): ", plain(e.input, redact, 60), came)
    if t == "step_started":
        return Text.assemble(Text(e.persona, style="bold"), f" on {e.model}")
    if t == "context_built":
        kinds: dict[str, int] = {}
        for piece in e.pieces:
            kinds[piece.kind] = kinds.get(piece.kind, 0) + 1
        parts = ", ".join(f"{n} {k}" for k, n in kinds.items())
        return Text(f"{e.tokens} tokens: {parts}")
    if t == "model_call":
        usage = e.usage
        ref = f" [{e.request_id}]" if e.request_id else ""
        head = (f"{e.model}{ref} {usage.input_tokens}+{usage.output_tokens} tok"
                f" {e.latency_ms:.0f} ms")  # fmt: skip
        if e.error:
            return Text.assemble(Text(head + " error: ", style="red"), plain(e.error, redact, 60))
        calls = f" -> {', '.join(c.name for c in e.tool_calls)}" if e.tool_calls else ""
        return Text.assemble(head + calls + " ", plain(e.text, redact, 50))
    if t == "tool_call":
        name = f"{e.tool} [{e.source}]" if e.source and ":" in e.source else e.tool
        took = f" {e.duration_ms:.0f} ms "
        if e.error:
            return Text.assemble(name + took, Text("error ", "red"), plain(e.error, redact, 60))
        if e.withheld_by:
            return Text.assemble(name + took, Text(f"withheld by {e.withheld_by} ", "yellow"),
                                 plain(e.result, redact, 40))  # fmt: skip
        return Text.assemble(
            f"{name}(", plain(e.arguments, redact, 40), ")" + took, plain(e.result, redact, 40)
        )
    if t == "retrieval":
        return Text(f"{e.retriever}: {len(e.passages)} passages for ") + plain(e.query, redact, 40)
    if t == "guardrail":
        verdict = Text(e.action, style=ACTION_STYLES.get(e.action, ""))
        return Text.assemble(
            f"{e.guardrail} ({e.stage}) ", verdict, " ", plain(e.reason, redact, 60)
        )
    if t == "step_finished":
        to = f" -> {e.handoff_to}" if e.handoff_to else ""
        return Text.assemble(f"{e.persona}{to}: ", plain(e.output, redact, 60))
    if t == "handoff":
        return Text(f"{e.source} -> {e.target}")
    if t == "escalation_raised":
        return Text.assemble(
            Text(f"waiting for a person ({e.kind}, risk {e.risk:.2f}): ", "yellow"),
            plain(e.reason, redact, 60),
        )
    if t == "escalation_decided":
        return Text.assemble(Text(f"{e.decision} by {e.by} ", "yellow"), plain(e.note, redact, 60))
    if t == "limit_hit":
        return Text.assemble(Text(f"limit {e.limit}: ", "red"), plain(e.message, redact, 60))
    if t == "error":
        origin = f" in plugin {e.plugin}" if e.plugin else ""
        return Text.assemble(Text(f"{e.error_type}{origin}: ", "red"), plain(e.message, redact, 60))
    if t == "run_failed":
        return Text.assemble(Text(f"failed ({e.kind}): ", "red"), plain(e.message, redact, 60))
    if t == "run_finished":
        return Text.assemble(
            Text(f"succeeded in {e.steps} steps, ${e.cost_usd:.4f}: ", "green"),
            plain(e.output, redact, 50),
        )
    if t == "model_switched":
        return Text(f"{e.failed} -> {e.next}: ") + plain(e.reason, redact, 60)
    if t == "run_cancelled":
        return Text("cancelled ", "magenta") + plain(e.reason, redact, 60)
    if t == "output_explained":
        return Text(f"{len(e.evidence)} claims linked to their evidence")
    if t == "memory_written":
        return Text(f"remembered about {e.subject} ({e.channel}): ") + plain(e.fact, redact, 60)
    if t == "run_resumed":
        return Text(f"resumed after {len(e.completed_steps)} finished steps")
    if t == "run_suspended":
        return Text("suspended ", "yellow") + plain(e.reason, redact, 60)
    return Text(t)


def detail(event: BaseEvent, redact: Redact) -> RenderableType:
    """Everything an event holds, for the detail pane."""
    e: Any = event
    t = event.type
    head = Text.assemble(
        Text(t, style="bold"), f"  step {event.step_id or '-'}  #{event.seq}  {clock(event.ts)}"
    )
    parts: list[RenderableType] = [head]
    if t == "model_call":
        u = e.usage
        offline = "  (offline model)" if e.offline else ""
        parts.append(
            Text(
                f"{e.model}{offline}  {u.input_tokens} in + {u.output_tokens} out tokens"
                f"  ${(e.cost_usd or 0):.5f}  {e.latency_ms:.0f} ms"
                + (f" ({e.queue_note})" if e.queue_note else "")
                + (f"  first token {e.ttft_ms:.0f} ms" if e.ttft_ms is not None else "")
            )
        )
        if e.stop_note:
            parts.append(Text(e.stop_note, style="yellow"))
        if e.output_mode:
            note = f": {e.output_note}" if e.output_note else ""
            parts.append(plain(f"schema asked as {e.output_mode}{note}", redact))
        parts.append(Text("\ncontext window as the model saw it", style="bold underline"))
        for m in e.messages:
            parts.append(Text(f"[{m.role}]", style="bold cyan"))
            parts.append(plain(m.content, redact))
            for call in m.tool_calls or []:
                parts.append(
                    Text.assemble(f"tool call {call.name} ", plain(call.arguments, redact))
                )
        parts.append(Text("\nreply", style="bold underline"))
        parts.append(plain(e.text, redact))
        for call in e.tool_calls:
            parts.append(
                Text.assemble(
                    Text(f"tool call {call.name} ", "bold"), plain(call.arguments, redact)
                )
            )
        if e.error:
            parts.append(Text.assemble(Text("error: ", "red"), plain(e.error, redact)))
    elif t == "context_built":
        table = Table("kind", "source", "ref", "tokens", box=None, padding=(0, 1))
        for piece in e.pieces:
            table.add_row(
                piece.kind, plain(piece.source, redact), plain(piece.ref, redact), str(piece.tokens)
            )
        parts += [Text(f"{e.persona}: {e.tokens} tokens"), table]
    elif t == "retrieval":
        parts.append(Text.assemble(f"{e.retriever}, query: ", plain(e.query, redact)))
        for p in e.passages:
            parts.append(
                Text.assemble(
                    Text(f"\n{p.score:.3f}  ", "bold"), plain(p.source, redact), f"  [{p.id}]"
                )
            )
            parts.append(plain(p.text, redact))
    elif t == "guardrail":
        parts.append(
            Text.assemble(
                f"{e.guardrail} at {e.stage}: ",
                Text(e.action, ACTION_STYLES.get(e.action, "")),
                f"  risk {e.risk:.2f}",
            )
        )
        parts.append(plain(e.reason, redact))
        if e.replacement is not None:
            parts += [Text("\nreplacement", style="bold underline"), plain(e.replacement, redact)]
        if e.details:
            parts.append(plain(as_lines(e.details), redact))
    elif t == "escalation_raised":
        parts.append(decision_detail(decision_view(e), redact))
    else:
        data = event.model_dump(mode="json", exclude={"type", "run_id", "seq", "ts", "step_id"})
        for key, value in data.items():
            shown = as_lines(value)
            gap = "\n" if "\n" in shown else ""
            parts.append(Text.assemble(Text(f"{key}: {gap}", "bold"), plain(shown, redact)))
    return Group(*parts)


#: how the flagged stretches of a checked text look (reverse video, as the issue of the
#: monitor's readers asked: found at a glance, in any theme)
FLAGGED = "reverse bold"
#: the keys of the inbox, by the decision they make
DECISION_KEYS = {"approve": "a", "edit": "e", "reject": "r"}


def escalation_detail(e: Escalation, redact: Redact, *, full: bool = False) -> RenderableType:
    """An escalation as the inbox shows it: the decision view with its keys."""
    return decision_detail(decision_view(e), redact, full=full, keys=True)


def decision_detail(
    view: DecisionView, redact: Redact, *, full: bool = False, keys: bool = False
) -> RenderableType:
    """The moment a person decides (:mod:`pilothouse.decision`): the reason once, the
    checked text with the flagged words in reverse video (folded around them unless
    ``full``), the proposed change word by word, the sources, and what each choice does."""
    parts: list[RenderableType] = [
        Text.assemble(
            Text(f"{view.kind}  risk {view.risk:.2f}", "bold yellow"),
            f"  run {view.run_id} ({view.crew})  step {view.step_id}",
        ),
        plain(view.subject, redact),
        Text.assemble(Text("reason: ", "bold"), plain(view.reason, redact)),
    ]
    if view.text:
        body = view.segments() if full else view.folded()
        parts += [Text("\nchecked", style="bold underline"), marked(body, redact)]
        if None in body:
            parts.append(Text("folded around what was flagged: f shows all of it", style="dim"))
        for label in dict.fromkeys(s.label for s in view.spans if s.label):
            parts.append(Text.assemble(Text(" flagged ", FLAGGED), " ", plain(label, redact)))
    if view.proposed_alone:
        parts += [Text("\nproposed", style="bold underline"), plain(view.proposed_alone, redact)]
    if view.changes:
        diff = view.changes if full else compact(view.changes)
        parts += [Text("\nproposed change", style="bold underline"), changed(diff, redact)]
    if view.sources:
        parts.append(Text("\nsources", style="bold underline"))
        for source in view.sources:
            parts.append(Text.assemble(Text(f"{source.kind} {source.ref}: ", "bold"),
                                       plain(source.text, redact, 200)))  # fmt: skip
    if view.status == "waiting" and view.choices:
        parts.append(Text(""))
        for choice in view.choices:
            key = f"{DECISION_KEYS[choice.decision]} " if keys else ""
            parts.append(Text.assemble(Text(f"{key}{choice.decision:<8}", "bold"), choice.does))
        if view.on_timeout:
            parts.append(Text(view.on_timeout, style="dim"))
    return Group(*parts)


def marked(body: list[Segment | None], redact: Redact) -> Text:
    """Pieces of a text, the flagged ones in reverse video, redacted (see
    :func:`~pilothouse.decision.redacted`)."""
    shown = redacted(body, redact)
    if shown is None:
        return plain("".join(s.text for s in body if s is not None), redact)
    text = Text()
    for s in shown:
        if s is None:
            text.append(" […] ", style="dim")
        else:
            text.append(s.text, style=FLAGGED if s.flagged else "")
    return text


def changed(diff: list[Change | None], redact: Redact) -> Text:
    """A word diff: removed words struck through in red, added ones in green."""
    text = Text()
    for c in diff:
        if c is None:
            text.append(" […] ", style="dim")
        elif c.op == "same":
            text.append(redact(c.text))
        elif c.op == "removed":
            text.append(redact(c.text), style="strike red")
        else:
            text.append(redact(c.text), style="bold green")
    return text


def failure_detail(failure: Failure, redact: Redact) -> RenderableType:
    """Why a run failed: the exception, the plugin, the step, the traceback, limit hits."""
    f, run = failure.info, failure.run
    kind = "limit hit" if f.kind == "limit" else (f.kind or "error")
    parts: list[RenderableType] = [
        Text.assemble(
            Text(f"{kind}  ", "bold red"),
            f"run {run.id} ({run.crew})  step {f.step_id or '-'} {f.persona or ''}",
        ),
        Text.assemble(
            Text("exception: ", "bold"), f.error_type or "-", f"   plugin: {f.plugin or '-'}"
        ),
        Text.assemble(Text("message: ", "bold"), plain(f.message or run.error, redact)),
    ]
    for limit in f.limits:
        parts.append(Text.assemble(Text("limit ", "red"), plain(limit, redact)))
    if f.traceback:
        parts += [Text("traceback", style="bold underline"), plain(f.traceback, redact)]
    return Group(*parts)
