"""Bundled guardrails: redact personal data, stop leaked secrets, flag risky or ungrounded claims.

Each is a small :class:`pilothouse.Guardrail`; a persona applies one by
naming it in ``guardrails.input`` or ``guardrails.output``.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from pilothouse import (
    EMAIL_PATTERN,
    SECRET_PATTERNS,
    Guardrail,
    GuardrailContext,
    Span,
    Verdict,
    hookimpl,
)

from .grounded import Grounded
from .injection import PromptInjection

EMAIL = re.compile(EMAIL_PATTERN)
PHONE = re.compile(r"(?<!\w)\+?\d[\d ().-]{7,}\d\b")
# the shapes the monitor and the portal redact are the shapes this guardrail stops
SECRET = re.compile("|".join(f"(?:{p})" for p in SECRET_PATTERNS))
# Claims a compliance reviewer does not let through unchecked, with a safer wording.
RISKY_CLAIMS: dict[str, str] = {
    r"\bguaranteed\b": "designed",
    r"\bguarantees?\b": "aims for",
    r"\brisk[- ]free\b": "low-risk",
    r"\b100\s?%": "nearly all",
    r"\bbest in the world\b": "among the best",
    r"\bnever fails\b": "rarely fails",
    r"\bclinically proven\b": "tested",
    r"\bcures?\b": "helps with",
}


class RedactPersonalData(Guardrail):
    """``fix``: replaces e-mail addresses and phone numbers with placeholders."""

    name = "redact_pii"
    description = "Replace e-mail addresses and phone numbers with [email] / [phone]."

    def check(self, text: str, context: GuardrailContext) -> Verdict:
        """Redact, or pass when there is nothing to redact."""
        fixed = PHONE.sub("[phone]", EMAIL.sub("[email]", text))
        if fixed == text:
            return Verdict.ok()
        spans = [Span(start=m.start(), end=m.end(), label="e-mail address")
                 for m in EMAIL.finditer(text)]  # fmt: skip
        blanked = EMAIL.sub(lambda m: " " * len(m.group()), text)  # offsets kept
        spans += [Span(start=m.start(), end=m.end(), label="phone number")
                  for m in PHONE.finditer(blanked)]  # fmt: skip
        return Verdict(action="fix", replacement=fixed, reason="personal data redacted", risk=0.3,
                       spans=sorted(spans, key=lambda s: s.start))  # fmt: skip


class NoSecrets(Guardrail):
    """``block``: stops text that carries an API key or token."""

    name = "no_secrets"
    description = "Block text that contains something shaped like an API key or token."

    def check(self, text: str, context: GuardrailContext) -> Verdict:
        """Block on a secret-shaped string (the secret itself is not repeated)."""
        found = list(SECRET.finditer(text))
        if found:
            spans = [Span(start=m.start(), end=m.end(), label="credential") for m in found]
            return Verdict(action="block", reason="the text contains a credential", risk=1.0,
                           spans=spans)  # fmt: skip
        return Verdict.ok()


class RiskyClaims(Guardrail):
    """``flag``: absolute marketing or health claims need a person's eye.

    The verdict carries a softened rewrite as ``replacement``: the proposal a
    reviewer can accept.
    """

    name = "risky_claims"
    description = "Flag absolute claims (guaranteed, risk-free, 100%, cures...) for review."

    def check(self, text: str, context: GuardrailContext) -> Verdict:
        """Flag with the claims found (where they are in the text) and a proposed rewrite."""
        found, fixed = [], text
        spans: list[Span] = []
        for pattern, softer in RISKY_CLAIMS.items():
            for match in re.finditer(pattern, text, re.I):
                if not any(s.start < match.end() and match.start() < s.end for s in spans):
                    label = f"absolute claim: '{softer}' proposed instead"
                    spans.append(Span(start=match.start(), end=match.end(), label=label))
            for match in re.finditer(pattern, fixed, re.I):
                found.append(match.group(0))
            fixed = re.sub(pattern, softer, fixed, flags=re.I)
        if not found:
            return Verdict.ok()
        claims = ", ".join(dict.fromkeys(f"'{c}'" for c in found))
        risk = min(1.0, 0.4 + 0.15 * len(found))
        return Verdict(
            action="flag", reason=f"absolute claims: {claims}", replacement=fixed, risk=risk,
            spans=sorted(spans, key=lambda s: s.start),
        )  # fmt: skip


class GuardrailSettings(BaseModel):
    """``[plugins.guardrails]``: how the ``grounded`` guardrail scores claims."""

    model_config = {"extra": "forbid"}

    #: an embedder that also scores claims by similarity (e.g. ``minilm``)
    grounded_embedder: str | None = None
    #: a model (alias or ``provider:model``) that rules on every claim
    grounded_judge: str | None = None


@hookimpl
def register_settings(register):
    """The bundled guardrails' section, ``[plugins.guardrails]``."""
    register("guardrails", GuardrailSettings)


@hookimpl
def register_guardrails(register, settings):
    """Register the bundled guardrails (``grounded`` as the settings configure it)."""
    section = settings.section("guardrails")
    register(RedactPersonalData())
    register(NoSecrets())
    register(RiskyClaims())
    register(Grounded(embedder=section.grounded_embedder, judge=section.grounded_judge))
    register(PromptInjection())
