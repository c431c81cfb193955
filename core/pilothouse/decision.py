"""The moment a person decides, as every view shows it.

An escalation is read into a :class:`DecisionView`: the reason once, what was checked
as text (structured data as ``key: value`` lines, never JSON), the stretches a
guardrail flagged, a word-level diff of the proposed rewrite against the original, the
sources the step had (passages, tool results) with where they came from, the risk,
and what each choice will do. The monitor, ``pilothouse inbox`` / ``show``, the portal
and the channels that carry an escalation elsewhere (MCP elicitation, A2A
``input-required``) draw the same view: :func:`plain_text` is the channels' rendering;
the terminal and the portal mark the same :meth:`DecisionView.folded` segments their
own way (reverse video, ``<mark>``).

Escalations written before the spans and sources existed still read: what they lack
is simply not drawn.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field

from .guardrails import Span

#: text longer than this is folded around its flagged spans (the rest one key away)
FOLD_FROM = 700
#: how much text is kept on each side of a flagged span when folding
FOLD_CONTEXT = 160


class Segment(NamedTuple):
    """A piece of the checked text; flagged when it has labels (the spans over it)."""

    text: str
    labels: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        """Some span covers this piece."""
        return bool(self.labels)


class Change(NamedTuple):
    """A run of words of the word diff: the same in both, added or removed."""

    op: Literal["same", "added", "removed"]
    text: str


class Choice(NamedTuple):
    """A decision a person can make here, and what it will do."""

    decision: Literal["approve", "edit", "reject"]
    does: str


class Source(BaseModel):
    """What the step had to go on: a retrieved passage or a tool's result."""

    #: passage or tool
    kind: str
    #: the passage's id (its file and chunk) or the tool's name
    ref: str
    #: the text, or its beginning
    text: str = ""


class DecisionView(BaseModel):
    """One escalation as a person reads it (see the module's docstring)."""

    id: str
    run_id: str
    crew: str = ""
    step_id: str | None = None
    persona: str = ""
    #: guardrail, tool_approval, tool_outcome_unknown, input_required or policy
    kind: str
    #: waiting, approve, edit, reject or withdrawn
    status: str = "waiting"
    risk: float = 0.0
    #: why, said once
    reason: str
    #: who raised it and what it looked at: "risky_claims on the output of compliance"
    subject: str
    #: what was checked, as text
    text: str = ""
    #: the flagged stretches of :attr:`text`
    spans: list[Span] = Field(default_factory=list)
    #: what the step goes on with if approved (None: nothing proposed)
    proposed: str | None = None
    #: the word diff of :attr:`proposed` against :attr:`text` (None: nothing changes, or
    #: the checked text was not kept: :attr:`proposed_alone` then)
    changes: list[Change] | None = None
    sources: list[Source] = Field(default_factory=list)
    choices: list[Choice] = Field(default_factory=list)
    #: what happens if nobody decides in time ("" when nothing does)
    on_timeout: str = ""

    @property
    def proposed_alone(self) -> str | None:
        """The proposal, when there is no checked text to show it against (an escalation
        written before the checked text was kept)."""
        return self.proposed if not self.text and self.proposed else None

    def segments(self) -> list[Segment]:
        """The whole text, cut where flagged spans begin and end."""
        return cut(self.text, self.spans)

    def folded(self, limit: int = FOLD_FROM, context: int = FOLD_CONTEXT) -> list[Segment | None]:
        """The text as :meth:`segments`, but a long one folded around its flagged spans
        (None where text was left out): nothing before the first span is ever all that
        is shown."""
        return fold(self.text, self.spans, limit=limit, context=context)


def decision_view(escalation: Any) -> DecisionView:
    """The view of an escalation: an :class:`~pilothouse.store.base.Escalation` from the
    store, or an ``escalation_raised`` event from a run's log."""
    e = escalation
    evidence: dict[str, Any] = dict(getattr(e, "evidence", None) or {})
    policy = evidence.get("policy") or {}
    kind = e.kind
    proposed = e.proposed
    if kind in ("tool_approval", "tool_outcome_unknown"):
        tool = str(evidence.get("tool", "the tool"))
        text = as_lines(evidence.get("arguments", {}))
        where = f" on {evidence['source']}" if evidence.get("source") else ""
        subject = f"a call to {tool}{where} by {e.persona}"
        if kind == "tool_outcome_unknown":
            subject += " that may have run"
        if proposed is not None:
            proposed = as_lines(_loads(proposed))
    elif kind == "input_required":
        subject = f"a question for a person from {e.persona}"
        text = as_lines(_loads(evidence.get("text", "")))
    elif kind == "guardrail":
        stage = evidence.get("stage", "output")
        what = f"passage {evidence['passage']}" if evidence.get("passage") else f"the {stage}"
        subject = f"{evidence.get('guardrail', 'a guardrail')} on {what} of {e.persona}"
        text = as_lines(_loads(evidence.get("text", "")))
    else:  # policy: the persona's own rule on its structured output
        subject = f"the rule of {e.persona} on its own output"
        text = as_lines(_loads(evidence.get("output", "")))
        if proposed is not None:
            proposed = as_lines(_loads(proposed))
    if kind not in (
        "guardrail",
        "tool_approval",
        "tool_outcome_unknown",
        "input_required",
        "policy",
    ):
        # a kind from a newer writer
        text = as_lines({k: v for k, v in evidence.items() if k != "policy"})
    changes = (
        word_diff(text, proposed) if text and proposed is not None and proposed != text else None
    )
    if "spans" in evidence:
        spans = [Span.model_validate(s) for s in evidence["spans"]]
        spans = [s for s in spans if 0 <= s.start < s.end <= len(text)]
    else:  # written before guardrails said where: the words the rewrite changes
        spans = _removed_spans(changes or [])
    sources = [Source.model_validate(s) for s in evidence.get("sources", [])]
    return DecisionView(
        id=getattr(e, "id", None) or e.escalation_id,
        run_id=e.run_id,
        crew=getattr(e, "crew", "") or "",
        step_id=e.step_id,
        persona=e.persona,
        kind=kind,
        status=getattr(e, "status", ""),
        risk=e.risk,
        reason=e.reason,
        subject=subject,
        text=text,
        spans=spans,
        proposed=proposed,
        changes=changes,
        sources=sources,
        choices=_choices(
            kind,
            e.persona,
            str(evidence.get("tool", "the tool")),
            policy,
            changed=proposed is not None and proposed != text,
        ),
        on_timeout=_on_timeout(policy),
    )


def _choices(
    kind: str, persona: str, tool: str, policy: dict[str, Any], *, changed: bool
) -> list[Choice]:
    reject = policy.get("reject", "revise")
    revisions = policy.get("max_revisions")
    if kind == "input_required":
        return [
            Choice("approve", f"{persona} goes on: the answer is yes, as asked"),
            Choice("edit", f"your text goes back to {persona} as the answer"),
            Choice("reject", "the run fails" if reject == "fail"
                   else f"{persona} does not go on; its step fails with your note"),
        ]  # fmt: skip
    if kind == "tool_outcome_unknown":
        return [
            Choice("approve", f"it did not run: {tool} is sent again with these arguments"),
            Choice("edit", f"{tool} is not sent again; {persona} reads what you write as"
                   " its result (what the call did)"),
            Choice("reject", f"{tool} is not sent again; {persona} is told its outcome is"
                   " unknown, with your note"),
        ]  # fmt: skip
    if kind == "tool_approval":
        return [
            Choice("approve", f"{tool} runs with these arguments"),
            Choice("edit", f"{tool} runs with the arguments you give"),
            Choice("reject", "the run fails" if reject == "fail"
                   else f"{tool} does not run; {persona} is told it was refused, with your note"),
        ]  # fmt: skip
    with_what = "the proposed rewrite" if changed else "this text as it is"
    again = f" (at most {revisions} times)" if revisions else ""
    return [
        Choice("approve", f"{persona}'s step goes on with {with_what}"),
        Choice("edit", f"{persona}'s step goes on with the text you write"),
        Choice("reject", "the run fails" if reject == "fail"
               else f"{persona} does the step again with your note{again}"),
    ]  # fmt: skip


def _on_timeout(policy: dict[str, Any]) -> str:
    after, then = policy.get("timeout_s"), policy.get("on_timeout")
    if then is None:
        return ""
    if then == "wait":
        return "it waits until someone decides"
    verb = {"approve": "approved", "reject": "rejected"}.get(then, then)
    return f"with no decision within {_duration(after)}, it is {verb} by the crew's policy"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "its timeout"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _loads(value: Any) -> Any:
    """A JSON object or array given as text, as data (anything else as it is)."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def as_lines(value: Any, indent: str = "") -> str:
    """Data as a person reads it: ``key: value`` lines, lists as ``- item`` lines, text
    as itself (never a JSON brace or a ``\\n`` escape)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{indent}{key}:")
                lines.append(as_lines(item, indent + "  "))
            else:
                lines.append(f"{indent}{key}: {_scalar(item)}")
        return "\n".join(lines)
    if isinstance(value, list):
        return "\n".join(
            f"{indent}- {as_lines(item, indent + '  ').lstrip()}" if isinstance(item, dict | list)
            else f"{indent}- {_scalar(item)}"
            for item in value
        )  # fmt: skip
    return _scalar(value)


def _scalar(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return "(empty)"
    return str(value)


def cut(text: str, spans: list[Span]) -> list[Segment]:
    """``text`` cut into pieces at every span's start and end, each piece with the labels
    of the spans over it."""
    bounds = sorted({0, len(text), *(s.start for s in spans), *(s.end for s in spans)})
    pieces = []
    for start, end in itertools.pairwise(bounds):
        if start >= end:
            continue
        labels = tuple(dict.fromkeys(s.label for s in spans if s.start <= start and end <= s.end))
        pieces.append(Segment(text[start:end], labels))
    return pieces


def fold(
    text: str, spans: list[Span], *, limit: int = FOLD_FROM, context: int = FOLD_CONTEXT
) -> list[Segment | None]:
    """:func:`cut`, with the text far from every span left out (None in its place) when
    the text is longer than ``limit``; with no span, its beginning is kept."""
    if len(text) <= limit:
        return list(cut(text, spans))
    windows = (
        [(max(0, s.start - context), min(len(text), s.end + context)) for s in spans]
        if spans
        else [(0, limit)]
    )
    windows.sort()
    kept: list[tuple[int, int]] = []
    for start, end in windows:
        start, end = _word_edge(text, start, back=True), _word_edge(text, end, back=False)
        if kept and start <= kept[-1][1]:
            kept[-1] = (kept[-1][0], max(kept[-1][1], end))
        else:
            kept.append((start, end))
    out: list[Segment | None] = []
    at = 0
    for start, end in kept:
        if start > at:
            out.append(None)
        inside = [
            Span(start=max(s.start, start) - start, end=min(s.end, end) - start, label=s.label)
            for s in spans
            if s.start < end and s.end > start
        ]
        out += cut(text[start:end], inside)
        at = end
    if at < len(text):
        out.append(None)
    return out


def _word_edge(text: str, at: int, *, back: bool) -> int:
    """``at`` moved to the nearest space (backwards or forwards), within 20 characters."""
    step = -1 if back else 1
    for moved in range(20):
        i = at + step * moved
        if i <= 0 or i >= len(text):
            return max(0, min(len(text), i))
        if text[i].isspace():
            return i + 1 if back else i
    return at


_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def word_diff(before: str, after: str) -> list[Change]:
    """What changed between two texts, word by word: runs of the same, removed and added
    words (spaces go with their neighbours)."""
    a, b = _TOKEN.findall(before), _TOKEN.findall(after)
    out: list[Change] = []

    def add(op: Literal["same", "added", "removed"], tokens: list[str]) -> None:
        if not tokens:
            return
        text = "".join(tokens)
        if out and out[-1].op == op:
            out[-1] = Change(op, out[-1].text + text)
        else:
            out.append(Change(op, text))

    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            add("same", a[i1:i2])
        else:
            add("removed", a[i1:i2])
            add("added", b[j1:j2])
    return out


def redacted(
    body: list[Segment | None], redact: Callable[[str], str]
) -> list[Segment | None] | None:
    """The pieces with ``redact`` applied to each, or None when redacting them one by one
    would not hide what redacting the whole text hides (a secret cut by a mark): the
    view then shows the whole text redacted, without marks."""
    pieces = [s for s in body if s is not None]
    whole = "".join(s.text for s in pieces)
    if "".join(redact(s.text) for s in pieces) != redact(whole):
        return None
    return [None if s is None else Segment(redact(s.text), s.labels) for s in body]


def _removed_spans(changes: list[Change]) -> list[Span]:
    """Where a diff's removed words are in the text it was made against."""
    spans, at = [], 0
    for change in changes:
        if change.op == "added":
            continue
        if change.op == "removed" and change.text.strip():
            spans.append(Span(start=at, end=at + len(change.text),
                              label="changed by the proposed rewrite"))  # fmt: skip
        at += len(change.text)
    return spans


def compact(changes: list[Change], context: int = 60) -> list[Change | None]:
    """A diff with long unchanged runs shortened to ``context`` characters on each side
    of a change (None where text was left out)."""
    out: list[Change | None] = []
    last = len(changes) - 1
    for i, change in enumerate(changes):
        if change.op != "same" or len(change.text) <= 2 * context + 20:
            out.append(change)
            continue
        head = change.text[:context] if i > 0 else ""
        tail = change.text[-context:] if i < last else ""
        if head:
            out.append(Change("same", head[: head.rfind(" ") + 1] or head))
        out.append(None)
        if tail:
            out.append(Change("same", tail[tail.find(" ") :] if " " in tail else tail))
    return out


def changed_words(changes: list[Change]) -> tuple[list[str], list[str]]:
    """The removed and the added words of a diff (what a reviewer checks first)."""
    removed = [w for c in changes if c.op == "removed" for w in c.text.split()]
    added = [w for c in changes if c.op == "added" for w in c.text.split()]
    return removed, added


def plain_text(
    view: DecisionView,
    *,
    full: bool = False,
    mark: Callable[[str, tuple[str, ...]], str] = lambda text, labels: f"«{text}»",
) -> str:
    """The view as plain text, for a channel with no styling (an MCP elicitation, an A2A
    message, a log line): flagged stretches between « », the diff as [-removed-]{+added+}."""
    lines = [f"{view.subject}, risk {view.risk:.2f}: {view.reason}"]
    if view.text:
        body = view.segments() if full else view.folded()
        lines.append("".join("[…]" if s is None else mark(s.text, s.labels) if s.flagged
                             else s.text for s in body))  # fmt: skip
        labels = dict.fromkeys(s.label for s in view.spans if s.label)
        lines += [f"  « » {label}" for label in labels]
    if view.proposed_alone:
        lines.append(f"proposed: {view.proposed_alone}")
    if view.changes:
        shown = {"same": "{}", "removed": "[-{}-]", "added": "{{+{}+}}"}
        diff = view.changes if full else compact(view.changes)
        lines.append("proposed: " + "".join("[…]" if c is None else shown[c.op].format(c.text)
                                            for c in diff))  # fmt: skip
    for source in view.sources:
        lines.append(f"source {source.kind} {source.ref}: {_short(source.text, 160)}")
    lines += [f"{c.decision}: {c.does}" for c in view.choices]
    if view.on_timeout:
        lines.append(view.on_timeout)
    return "\n".join(lines)


def _short(text: str, width: int) -> str:
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"
