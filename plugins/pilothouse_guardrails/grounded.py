"""Groundedness: is each claim of an output supported by what the step had?

A claim is a sentence (or list item) of the output. Its support is the largest
share of its content words found in one sentence of the evidence (retrieved
passages, tool results, the step's input). Numbers count as words, and a claim
whose figures are not all in the evidence sentence is not supported ("19 euros"
against "79 to 129 euros"). Claims too short to judge are left out. When more
than ``max_unsupported`` of the judged claims fall under ``min_support``, the
step is flagged, with every claim's score and best evidence in the verdict's
details.
"""

from __future__ import annotations

from pilothouse import Guardrail, GuardrailContext, Verdict
from pilothouse.text import claims, content_words, sentences


class Grounded(Guardrail):
    """``flag``: too many claims of the output are not backed by the step's evidence."""

    name = "grounded"
    description = (
        "Flag outputs whose claims the step's passages, tool results and input do not support."
    )

    def __init__(self, min_support: float = 0.6, max_unsupported: float = 0.2, min_words: int = 3):
        self.min_support = min_support
        self.max_unsupported = max_unsupported
        self.min_words = min_words

    def check(self, text: str, context: GuardrailContext) -> Verdict:
        """Score every claim; flag when the unsupported share is above the threshold."""
        evidence = [s for e in context.evidence for s in sentences(e)]
        if not evidence:  # nothing to be grounded in: not this guardrail's call
            return Verdict(details={"claims": [], "note": "the step had no evidence"})
        sets = [(s, content_words(s)) for s in evidence]
        scored = []
        for claim in claims(text):
            words = content_words(claim)
            if len(words) < self.min_words:
                continue
            numbers = {w for w in words if w[0].isdigit()}
            best, best_score = "", 0.0
            for sentence, found in sets:
                score = len(words & found) / len(words)
                if numbers - found:  # a figure the evidence does not state is not supported
                    score = min(score, self.min_support / 2)
                if score > best_score:
                    best, best_score = sentence, score
            scored.append(
                {"claim": claim, "support": round(best_score, 3),
                 "supported": best_score >= self.min_support, "evidence": best[:300]}
            )  # fmt: skip
        if not scored:
            return Verdict(details={"claims": [], "unsupported_share": 0.0})
        unsupported = [c for c in scored if not c["supported"]]
        share = len(unsupported) / len(scored)
        details = {"claims": scored, "unsupported_share": round(share, 3)}
        if share <= self.max_unsupported:
            return Verdict(details=details)
        listed = "; ".join(f"'{c['claim'][:80]}'" for c in unsupported[:3])
        return Verdict(
            action="flag",
            reason=f"{len(unsupported)} of {len(scored)} claims lack support in the evidence:"
            f" {listed}",
            risk=round(share, 3),
            details=details,
        )
