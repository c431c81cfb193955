"""Why an output says what it says: evidence ranked by how much of the output it backs.

Every claim of the final output spreads its weight over the evidence items
that share its content words (in proportion to the share), and the items'
totals are normalised to 1. Evidence is what the run saw: retrieved passages,
tool results and the earlier steps' outputs.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..events import Attribution, BaseEvent, RetrievalDone, StepFinished, ToolCalled
from ..text import claims, content_words

#: an item must hold this share of a claim's words to count for it
MIN_SHARE = 0.3


def rank_evidence(
    output: str, evidence: Iterable[tuple[str, str, str | None, str]], *, top: int = 10
) -> list[Attribution]:
    """``evidence`` is (kind, ref, step_id, text); returns the ``top`` items, best first."""
    # only claims of three content words or more are weighed: an output with none (a
    # short answer) is backed by nothing, and its evidence need not be read
    weighed = [words for claim in claims(output) if len(words := content_words(claim)) >= 3]
    if not weighed:
        return []
    items, seen = [], set()
    for kind, ref, step, text in evidence:
        # the same passage retrieved twice counts once, at its first step
        if not text or text.strip() == output.strip() or (kind, ref, text) in seen:
            continue
        seen.add((kind, ref, text))
        items.append((kind, ref, step, text, content_words(text)))
    totals = [0.0] * len(items)
    for words in weighed:
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


Evidence = tuple[str, str, str | None, str]


def evidence_of(event: BaseEvent) -> list[Evidence]:
    """What an event adds to the evidence a run saw: (kind, ref, step_id, text)."""
    if isinstance(event, StepFinished):
        return [("output", event.persona, event.step_id, event.output)]
    if isinstance(event, RetrievalDone):
        return [("passage", p.id, event.step_id, p.text) for p in event.passages]
    if isinstance(event, ToolCalled) and event.result and not event.withheld_by:
        return [("tool", event.tool, event.step_id, event.result)]
    return []


def claim_evidence(output: str, evidence: Iterable[Evidence]) -> list[tuple[str, list[Evidence]]]:
    """Each claim of ``output`` with the evidence items holding at least
    :data:`MIN_SHARE` of its content words, the strongest first."""
    items = [
        (item, content_words(item[3])) for item in evidence if item[3].strip() != output.strip()
    ]
    found = []
    for claim in claims(output):
        words = content_words(claim)
        backing = []
        if len(words) >= 3:
            scored = [(len(words & w) / len(words), item) for item, w in items]
            backing = [item for share, item in sorted(scored, key=lambda s: -s[0])
                       if share >= MIN_SHARE]  # fmt: skip
        found.append((claim, _unique(backing)))
    return found


def _unique(items: list[Evidence]) -> list[Evidence]:
    seen, kept = set(), []
    for item in items:
        if item[:3] not in seen:
            seen.add(item[:3])
            kept.append(item)
    return kept
