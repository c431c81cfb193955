"""Prompt injection: text that tries to give the model orders it did not get from the crew.

Patterns cover the common families: overriding instructions, role changes and
"jailbreak" modes, asking for the system prompt or secrets, sending data
somewhere, and steering tool calls. On a retrieved passage the verdict drops
the passage; on an input or output it blocks the step.
"""

from __future__ import annotations

import re

from pilothouse import Guardrail, GuardrailContext, Span, Verdict

PATTERNS: dict[str, str] = {
    "override": r"\b(ignore|disregard|forget|override)\b[^.\n]{0,40}\b(instructions?|directions|rules|guidelines|prompts?|messages)\b",
    "role": r"\b(you are now|from now on you|act as|pretend to be)\b[^.\n]{0,60}\b(unrestricted|no (rules|limits|filters)|jailbr\w+|dan|evil|admin\w*|developer mode)\b|\bdeveloper mode\b|\bjailbreak\w*\b",
    "reveal": r"\b(reveal|print|show|repeat|output|tell me)\b[^.\n]{0,30}\b(system prompt|hidden (instructions|prompt)|your instructions|api[ _-]?keys?|passwords?|credentials|secrets?)\b",
    "exfiltrate": r"\b(send|post|upload|forward|email|exfiltrate|leak)\b[^.\n]{0,80}(https?://|\b(api[ _-]?keys?|passwords?|credentials|secrets?|customer (data|records|list))\b)",
    "markup": r"<\s*/?\s*(system|assistant|instructions?)\s*>|\[\s*(system|admin)\s*\]|\bBEGIN (SYSTEM|ADMIN)\b",
    "tools": r"\b(call|invoke|use|run)\b[^.\n]{0,30}\b(tool|function|transfer_to_\w+)\b[^.\n]{0,60}\b(without (asking|approval)|immediately|delete|refund|transfer)\b|\bdelete (all|every)\b",
}  # fmt: skip
_COMPILED = {name: re.compile(p, re.I) for name, p in PATTERNS.items()}


class PromptInjection(Guardrail):
    """``block``: the text tries to instruct the model (drops a passage, stops a step)."""

    name = "prompt_injection"
    description = "Block text that tries to override instructions, change roles or exfiltrate."

    def check(self, text: str, context: GuardrailContext) -> Verdict:
        """Block with the families that matched and the matching snippets."""
        matches = {name: m for name, rx in _COMPILED.items() if (m := rx.search(text))}
        found = {name: m.group(0)[:80] for name, m in matches.items()}
        if not found:
            return Verdict.ok()
        where = "a retrieved passage" if context.stage == "retrieval" else f"the {context.stage}"
        return Verdict(
            action="block",
            reason=f"prompt injection in {where}: {', '.join(found)}",
            risk=min(1.0, 0.6 + 0.15 * len(found)),
            details={"matched": found},
            spans=[Span(start=m.start(), end=m.end(), label=f"instructions to the model ({name})")
                   for name, m in sorted(matches.items(), key=lambda kv: kv[1].start())],
        )  # fmt: skip
