"""Why an output says what it says: evidence ranked by how much of the output it backs.

Every claim of the final output spreads its weight over the evidence items
that share its content words (in proportion to the share), and the items'
totals are normalised to 1. Evidence is what the run saw: retrieved passages,
tool results and the earlier steps' outputs.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from .text import claims, content_words

#: an item must hold this share of a claim's words to count for it
MIN_SHARE = 0.3


class Attribution(BaseModel):
    """One piece of evidence and its share of the output."""

    kind: str  # passage, tool or output
    ref: str
    step_id: str | None = None
    score: float
    excerpt: str


def rank_evidence(
    output: str, evidence: Iterable[tuple[str, str, str | None, str]], *, top: int = 10
) -> list[Attribution]:
    """``evidence`` is (kind, ref, step_id, text); returns the ``top`` items, best first."""
    items, seen = [], set()
    for kind, ref, step, text in evidence:
        # the same passage retrieved twice counts once, at its first step
        if not text or text.strip() == output.strip() or (kind, ref, text) in seen:
            continue
        seen.add((kind, ref, text))
        items.append((kind, ref, step, text, content_words(text)))
    totals = [0.0] * len(items)
    for claim in claims(output):
        words = content_words(claim)
        if len(words) < 3:
            continue
        shares = [len(words & found) / len(words) for *_, found in items]
        weight = sum(s for s in shares if s >= MIN_SHARE)
        if weight:
            for i, share in enumerate(shares):
                if share >= MIN_SHARE:
                    totals[i] += share / weight
    total = sum(totals)
    if not total:
        return []
    ranked = sorted(range(len(items)), key=lambda i: -totals[i])
    return [
        Attribution(
            kind=items[i][0],
            ref=items[i][1],
            step_id=items[i][2],
            score=round(totals[i] / total, 4),
            excerpt=items[i][3][:200],
        )
        for i in ranked[:top]
        if totals[i] > 0
    ]
