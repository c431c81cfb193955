"""Oversight: the guardrails' verdicts on a step's text, and the human on the loop.

A flagged verdict (with ``on_flag = "escalate"``), a persona's risk field above its
threshold and a tool that needs approval each raise an escalation: the step pauses
until a person, or the crew's timeout policy, decides; other runs go on meanwhile.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from ..asking import Answer
from ..blocking import report_held_loop, run_blocking
from ..crew import EscalationRules, Persona
from ..errors import EscalationRejected, GuardrailBlocked, PilothouseError, PluginError, ToolError
from ..events import EscalationDecided, EscalationRaised, GuardrailChecked
from ..guardrails import GuardrailContext, Stage, Verdict
from ..retrieval import Passage
from ..store.base import Escalation
from ..tools import canonical_json
from .calls import Host as CallsHost
from .calls import ModelCalls
from .escalation import DecisionWatcher
from .runstate import _Run, _SentBack


class Host(CallsHost, Protocol):
    """What oversight needs of the engine it serves, besides what model calls do."""

    decisions: DecisionWatcher | None
    #: a guardrail's judge asks a model through them
    calls: ModelCalls


class Oversight:
    """Applies a persona's guardrails and escalates to a person, for one engine."""

    def __init__(self, engine: Host) -> None:
        self.engine = engine

    async def screen(
        self, run: _Run, persona: Persona, passages: list[tuple[str, Passage]], step_id: str
    ) -> list[tuple[str, Passage]]:
        """Retrieved text is data: a passage a retrieval guardrail does not pass is dropped."""
        kept = []
        for retriever, passage in passages:
            text, _ = await self.screen_text(run, persona, passage.text, step_id, passage.id)
            if text is not None:
                kept.append((retriever, passage.model_copy(update={"text": text})))
        return kept

    async def screen_text(
        self, run: _Run, persona: Persona, text: str, step_id: str, ref: str
    ) -> tuple[str | None, str | None]:
        """One outside text through the persona's retrieval guardrails: the text to use
        (fixed if a guardrail fixed it) or None, with the guardrail that withheld it."""
        screened: str = text
        for name in persona.guardrails.retrieval:
            verdict = await self.check(run, persona, name, "retrieval", screened, step_id, ref=ref)
            if verdict.action == "fix":
                screened = verdict.replacement or ""
            elif verdict.action != "pass":
                return None, name
        return screened, None

    async def check(
        self,
        run: _Run,
        persona: Persona,
        name: str,
        stage: Stage,
        text: str,
        step_id: str,
        evidence: list[str] | None = None,
        ref: str | None = None,
    ) -> Verdict:
        """Run one guardrail and log its verdict (with ``ref``: the passage it judged)."""
        entry = self.engine.registry.get("guardrails", name)
        context = GuardrailContext(
            run_id=run.id,
            step_id=step_id,
            persona=persona.name,
            stage=stage,
            crew=run.crew.name,
            evidence=list(evidence or ()),
            ask=functools.partial(self.engine.calls.ask, run, step_id),
            embed=self._embed,
        )
        guardrail = entry.value
        try:
            if guardrail.blocking:
                verdict = await run_blocking(lambda: guardrail.check(text, context),
                                             name=f"guardrail {name}")  # fmt: skip
            else:
                started = time.perf_counter()
                verdict = guardrail.check(text, context)
                report_held_loop(f"guardrail {name!r}", started,
                                 "set blocking = True on it to run it in a thread")  # fmt: skip
            if hasattr(verdict, "__await__"):
                verdict = await verdict
            if not isinstance(verdict, Verdict):
                raise TypeError(f"check() returned {type(verdict).__name__}, not a Verdict")
            if verdict.action == "fix" and verdict.replacement is None:
                raise TypeError("a 'fix' verdict needs a replacement text")
        except Exception as exc:
            raise PluginError(
                entry.plugin, f"guardrail {name!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        details = {**verdict.details, "passage": ref} if ref else verdict.details
        self.engine.emit(
            run,
            GuardrailChecked,
            step_id=step_id,
            guardrail=name,
            stage=stage,
            action=verdict.action,
            reason=verdict.reason,
            replacement=verdict.replacement,
            risk=verdict.risk,
            details=details,
        )
        return verdict

    async def _embed(self, name: str, texts: Sequence[str]) -> list[list[float]]:
        """Vectors from a registered embedder, computed in a thread of its own (a run that
        is cancelled or times out meanwhile does not wait for it)."""
        embedder = self.engine.registry.get("embedders", name).value
        texts = list(texts)
        return await run_blocking(lambda: embedder.embed(texts), name=f"embedder {name}")

    async def guard(
        self,
        run: _Run,
        persona: Persona,
        stage: Stage,
        text: str,
        step_id: str,
        evidence: list[str] | None = None,
    ) -> str:
        """Apply the persona's input or output guardrails; return the text to go on with."""
        names = persona.guardrails.input if stage == "input" else persona.guardrails.output
        for name in names:
            verdict = await self.check(run, persona, name, stage, text, step_id, evidence)
            if verdict.action == "block":
                raise GuardrailBlocked(name, verdict.reason or "no reason given")
            if verdict.action == "fix":
                text = verdict.replacement or ""
            elif verdict.action == "flag" and run.crew.on_flag == "fail":
                raise GuardrailBlocked(
                    name, f"flagged, and the crew fails on flags: {verdict.reason}"
                )
            elif verdict.action == "flag" and run.crew.on_flag == "escalate":
                proposed = verdict.replacement if verdict.replacement is not None else text
                can_revise = stage == "output"
                evidence = {
                    "guardrail": name,
                    "stage": stage,
                    "text": text,
                    "spans": [s.model_dump() for s in verdict.spans],
                    "sources": self._sources(run, step_id),
                }
                decided = await self.escalate(
                    run,
                    persona,
                    step_id,
                    kind="guardrail",
                    reason=verdict.reason or f"flagged by {name}",
                    risk=verdict.risk,
                    evidence=evidence | _policy(run, can_revise=can_revise),
                    proposed=proposed,
                )
                text = self._decided_text(run, decided, proposed, can_revise=can_revise)
        return text

    @staticmethod
    def _sources(run: _Run, step_id: str) -> list[dict[str, str]]:
        """What the step had to go on (its passages and tool results), with where each
        came from: the person deciding sees what the output was checked against."""
        return [
            {"kind": kind, "ref": ref, "text": text[:SOURCE_CHARS]}
            for kind, ref, at, text in run.evidence
            if at == step_id and kind in ("passage", "tool")
        ]

    async def escalate(
        self,
        run: _Run,
        persona: Persona,
        step_id: str,
        *,
        kind: str,
        reason: str,
        risk: float,
        evidence: dict[str, Any],
        proposed: str | None,
        rules: EscalationRules | None = None,
    ) -> Escalation:
        """Pause this step until a person (or the crew's timeout policy, or ``rules``
        where they differ from it) decides."""
        if self.engine.decisions is None:
            raise PilothouseError(
                f"{persona.name!r} needs a person's decision ({reason}), but this runtime has"
                " no run store for decisions to reach it"
            )
        prior = run.prior_escalations.pop((step_id, kind, reason), None)
        if prior is not None and prior in run.logged_decisions:
            return self.engine.decisions.store.get_escalation(prior)  # decided before the crash
        if prior is not None:  # raised before the crash: wait on the same one
            escalation_id = prior
        else:
            escalation_id = uuid.uuid4().hex[:10]
            self.engine.emit(
                run,
                EscalationRaised,
                step_id=step_id,
                escalation_id=escalation_id,
                persona=persona.name,
                kind=kind,
                reason=reason,
                risk=risk,
                evidence=evidence,
                proposed=proposed,
            )
            await self.engine.log.flush()  # the inbox of every process sees it now
            recorded = self.engine.replaying and self.engine.replaying.decision(
                step_id, kind, reason
            )
            if recorded:
                decision, by, note, text = recorded
                self.engine.decisions.store.decide(escalation_id, decision, by=f"replay of {by}",
                                            note=note, text=text)  # fmt: skip
        decided = await self.engine.decisions.wait(escalation_id, rules or run.crew.escalation)
        self.engine.emit(
            run,
            EscalationDecided,
            step_id=step_id,
            escalation_id=escalation_id,
            decision=decided.status,
            by=decided.decided_by or "",
            decided_at=decided.decided_at or time.time(),
            note=decided.note,
            text=decided.text,
        )
        return decided

    def _decided_text(
        self, run: _Run, decided: Escalation, proposed: str | None, *, can_revise: bool
    ) -> str:
        """The text a step goes on with after a decision, or the consequence of a rejection."""
        if decided.status == "approve":
            return proposed or ""
        if decided.status == "edit":
            return decided.text or ""
        if can_revise and run.crew.escalation.on_reject == "revise":
            raise _SentBack(decided.note or "rejected without a note")
        raise EscalationRejected(
            f"{decided.decided_by} rejected escalation {decided.id}: {decided.note or 'no note'}"
        )

    async def check_risk(self, run: _Run, persona: Persona, output: str, step_id: str) -> str:
        """The persona's own escalation rule: a risk field of its structured output
        (called only for a persona that names one)."""
        assert persona.risk_field is not None
        try:
            value = json.loads(output).get(persona.risk_field)
        except (json.JSONDecodeError, AttributeError):
            return output
        if not isinstance(value, int | float) or value <= persona.risk_threshold:
            return output
        decided = await self.escalate(
            run,
            persona,
            step_id,
            kind="policy",
            reason=f"{persona.risk_field} = {value} is above {persona.risk_threshold}",
            risk=min(1.0, float(value)),
            evidence={"output": output} | _policy(run, can_revise=True),
            proposed=output,
        )
        return self._decided_text(run, decided, output, can_revise=True)

    async def approve_tool(
        self, run: _Run, persona: Persona, tool: Any, arguments: Any, step_id: str
    ) -> Any:
        """A person approves this exact call; an approval holds for these arguments only."""
        canonical = json.dumps(arguments.model_dump(mode="json"), sort_keys=True)
        if (tool.name, canonical) in run.approved:
            return arguments
        decided = await self.escalate(
            run,
            persona,
            step_id,
            kind="tool_approval",
            reason=f"{tool.name!r} needs approval before it runs",
            risk=0.5,
            evidence={"tool": tool.name, "arguments": json.loads(canonical)}
            | _policy(run, can_revise=False, tool=True),
            proposed=canonical,
        )
        if decided.status not in ("approve", "edit"):  # only an approval runs the tool
            if run.crew.escalation.on_reject == "fail":
                raise EscalationRejected(
                    f"{decided.decided_by} rejected the call to {tool.name!r}:"
                    f" {decided.note or 'no note'}"
                )
            raise ToolError(f"a person rejected this call: {decided.note or 'no reason given'}")
        if decided.status == "edit":
            arguments = tool.parse_arguments(decided.text or "{}")
            canonical = json.dumps(arguments.model_dump(mode="json"), sort_keys=True)
        run.approved.add((tool.name, canonical))
        return arguments

    async def ask(
        self, run: _Run, persona: Persona, step_id: str, question: str, reason: str
    ) -> Answer:
        """A question from inside a step (:func:`pilothouse.ask_person`), as an
        escalation; the person's decision as the answer."""
        decided = await self.escalate(
            run,
            persona,
            step_id,
            kind="input_required",
            reason=reason,
            risk=0.5,
            evidence={"text": question} | _policy(run, can_revise=False, tool=True),
            proposed=None,
        )
        decision = decided.status if decided.status in ("approve", "edit") else "reject"
        return Answer(decision=decision, text=decided.text, note=decided.note or "",
                      by=decided.decided_by or "")  # fmt: skip

    async def outcome_unknown(
        self, run: _Run, persona: Persona, tool: Any, call: Any, step_id: str
    ) -> str | None:
        """A call that is not safe to repeat was sent and never answered (the process
        stopped): a person says what happened. Approve: it did not run, send it again
        (None). Edit: what it did, which the model reads as its result. Reject: it is not
        sent again and the model is told its outcome is unknown. Nobody deciding in time
        is a rejection, whatever the crew's policy approves by: a guess never repeats it."""
        arguments = json.loads(canonical_json(call.arguments))
        rules = run.crew.escalation
        if rules.on_timeout == "approve":
            rules = rules.model_copy(update={"on_timeout": "reject"})
        policy = _policy(run, can_revise=False, tool=True)
        policy["policy"] |= {"reject": "refuse", "on_timeout": rules.on_timeout}
        decided = await self.escalate(
            run,
            persona,
            step_id,
            kind="tool_outcome_unknown",
            reason=f"{tool.name!r} was sent but never answered (the process stopped): it may"
            " have run, and it is not safe to send twice",
            risk=0.8,
            evidence={
                "tool": tool.name,
                "arguments": arguments,
                "source": getattr(tool, "source", None),
            }
            | policy,
            proposed=None,
            rules=rules,
        )
        if decided.status == "approve":
            return None
        if decided.status == "edit":
            return decided.text or ""
        raise ToolError(
            f"the call to {tool.name!r} may or may not have run (the process stopped before it"
            f" answered); a person chose not to send it again: {decided.note or 'no note'}"
        )


#: how much of each source an escalation keeps (the run's log has them whole)
SOURCE_CHARS = 600


def _policy(run: _Run, *, can_revise: bool, tool: bool = False) -> dict[str, Any]:
    """What each choice will do, as the crew's rules say, kept with the escalation so
    that every view can say it: ``{"policy": {...}}``. A rejection sends the step back
    (``revise``), refuses a tool call (the model hears it: ``refuse``) or fails the run."""
    rules = run.crew.escalation
    if tool:
        reject = "fail" if rules.on_reject == "fail" else "refuse"
    else:
        reject = "revise" if can_revise and rules.on_reject == "revise" else "fail"
    return {
        "policy": {
            "reject": reject,
            "max_revisions": rules.max_revisions if reject == "revise" else None,
            "on_timeout": rules.on_timeout,
            "timeout_s": rules.timeout_s,
        }
    }
