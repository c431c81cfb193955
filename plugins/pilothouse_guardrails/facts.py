"""The fact-bearing parts of a claim, checked against its evidence one by one.

Word overlap and embedding similarity score a claim that changes one word among many
shared ones as well supported: "a five-year warranty" against "a two-year warranty",
"rated IP67" against "rated IP54", "can be folded" against "must not be folded". This
module reads what such a change touches:

- **figures**: numbers, number words (``five-year``), percentages, ranges;
- **codes and names**: tokens with letters and digits (``IP67``, ``H30``), capitals
  (``USB``), capitalised words inside the sentence (``Helio``, ``Oslo``);
- **attributes**: words of closed classes (colours, materials, channels, places,
  days, months, seasons, directions) the evidence does not state;
- **polarity**: a negation ("not", "never", "must not", "no longer"...) or an antonym
  (removable/fixed, included/excluded...) on one side only;
- **comparisons**: "faster", "more than", "cheaper"... against the comparison or the
  order of the figures the evidence gives.

:func:`findings` returns what failed and why; an empty list means every part was found.
Offline, stdlib only, microseconds per claim.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

_NUMBER_WORDS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "dozen": 12, "twice": 2, "half": 0.5, "thirds": 3, "quarter": 0.25,
}  # fmt: skip
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "last": -1,
}  # fmt: skip
#: "one" is a figure only before a unit ("one-year", "one hour"): elsewhere a pronoun
_UNITS = frozenset(
    "year years month months week weeks day days hour hours minute minutes second seconds"
    " litre litres liter liters kg g gram grams watt watts w mah euro euros dollar dollars"
    " percent % km m cm mm metre metres meter meters times person people unit units".split()
)
_NUMBER = re.compile(
    r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)(?:\s*(k|m|bn|million|billion)\b)?", re.I
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'\u2019-]*|\d[\w.,-]*")
_CODE = re.compile(
    r"\b(?=[A-Za-z0-9-]*\d)(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\b"
)
#: "5-year", "12-watt", "30-litre": a figure and its unit, not a code
_MEASURE = re.compile(r"^\d+(?:\.\d+)?-[A-Za-z]+$")
_ACRONYM = re.compile(r"\b[A-Z]{2,}\b")
_NEGATIONS = re.compile(
    r"\b(?:not|no|never|none|neither|nor|without|cannot|can't|won't|don't|doesn't|didn't"
    r"|isn't|aren't|wasn't|weren't|mustn't|shouldn't|no longer|nothing)\b|n't\b",
    re.I,
)
_ANTONYMS = [
    ("removable", "fixed"), ("removable", "built-in"), ("detachable", "integrated"),
    ("detachable", "built-in"), ("foldable", "rigid"), ("included", "excluded"),
    ("optional", "mandatory"), ("optional", "required"), ("allowed", "forbidden"),
    ("permitted", "prohibited"), ("increase", "decrease"), ("increased", "decreased"),
    ("rose", "fell"), ("grew", "shrank"), ("grew", "fell"), ("gain", "loss"),
    ("open", "closed"), ("available", "unavailable"), ("possible", "impossible"),
    ("safe", "unsafe"), ("waterproof", "water-resistant"), ("inside", "outside"),
    ("indoor", "outdoor"), ("before", "after"), ("always", "sometimes"),
    ("heavier", "lighter"), ("cheap", "expensive"), ("new", "used"), ("early", "late"),
    ("distrust", "trust"), ("punish", "reward"), ("calm", "hyped"),
]  # fmt: skip
_OPPOSITE = {a: b for a, b in _ANTONYMS} | {b: a for a, b in _ANTONYMS}
#: comparatives: +1 says "the first is above the second", -1 below
_COMPARATIVES = {
    **dict.fromkeys("more faster higher larger bigger greater better quicker stronger longer"
                    " heavier above over exceeds exceeded outgrew outsold".split(), 1),
    **dict.fromkeys("less fewer slower lower smaller cheaper weaker worse shorter lighter"
                    " below under".split(), -1),
}  # fmt: skip
#: adverbs that turn "more" round: "more slowly" is "slower"
_BACKWARD = frozenset("slowly rarely weakly seldom cheaply poorly".split())
_CLASSES: dict[str, frozenset[str]] = {
    "colour": frozenset(
        "black white grey gray red green blue yellow orange purple pink brown beige navy"
        " olive teal turquoise silver gold slate moss charcoal khaki cream".split()
    ),
    "material": frozenset(
        "cotton wool nylon polyester leather plastic metal steel aluminium aluminum wood"
        " glass rubber silicone canvas carbon titanium recycled".split()
    ),
    "channel": frozenset(
        "video videos review reviews forum forums magazine magazines newspaper newspapers"
        " radio television tv podcast podcasts newsletter newsletters email emails"
        " influencer influencers billboard billboards print social"
        " search catalogue catalog events fairs".split()
    ),
    "place": frozenset(
        "europe european asia asian america american africa african germany german france"
        " french italy italian spain spanish uk britain british nordic urban rural city"
        " mountain mountains coast beach desert indoor outdoor".split()
    ),
    "time": frozenset(
        "monday tuesday wednesday thursday friday saturday sunday january february march"
        " april may june july august september october november december spring summer"
        " autumn fall winter morning evening night daily weekly monthly yearly annual".split()
    ),
    "direction": frozenset("north south east west northern southern eastern western".split()),
}
_CLASS_OF = {word: name for name, words in _CLASSES.items() for word in words}
#: where a sentence's clauses part
_CLAUSE = re.compile(
    r"[;:,](?=\s)|[.!?](?=\s|$)|\b(?:while|whereas|but|although|though|so|because)\b", re.I
)
_NEGATION_WORDS = frozenset(
    "not no never none neither nor without cannot nothing longer must should".split()
)
_STOP = frozenset("a an and or the of in on at to for with by from as is are".split())
#: capitalised words that name nothing in particular
_COMMON_CAPITALS = frozenset("i a the it its this that these those we you they he she".split())


@dataclass(frozen=True)
class Finding:
    """One fact-bearing part of a claim that the evidence does not back."""

    #: figure, code, name, attribute, polarity or comparison
    part: str
    #: what the claim says
    claim: str
    #: what the evidence says instead, if it says something of the kind
    evidence: str
    #: why, in words
    why: str


def findings(claim: str, evidence: str) -> list[Finding]:
    """What of ``claim`` its ``evidence`` (the sentences that best support it) does not
    state: figures, codes, names, attributes, polarity and comparisons."""
    found: list[Finding] = []
    found += _figures(claim, evidence)
    found += _codes_and_names(claim, evidence)
    found += _attributes(claim, evidence)
    found += _polarity(claim, evidence)
    found += _comparison(claim, evidence)
    found += _added_clause(claim, evidence)
    return found


def figures(text: str) -> list[tuple[float, str]]:
    """The figures of a text as (value, as written), in order: digits (with thousands
    separators, decimals and k/million), and number words ("five-year", "six to eight")."""
    out: list[tuple[float, str]] = []
    for match in _NUMBER.finditer(text):
        value = float(match.group(1).replace(",", ""))
        scale = (match.group(2) or "").lower()
        value *= {"k": 1e3, "m": 1e6, "million": 1e6, "bn": 1e9, "billion": 1e9}.get(scale, 1)
        out.append((value, match.group(0)))
    words = [w.lower() for w in _WORD.findall(text)]
    for i, word in enumerate(words):
        head = word.split("-")[0]
        value = _NUMBER_WORDS.get(head)
        if value is None and head == "one":
            after = (
                word.split("-")[1] if "-" in word else (words[i + 1] if i + 1 < len(words) else "")
            )
            value = 1 if after in _UNITS else None
        if value is not None:
            out.append((float(value), word))
    return out


def ordinals(text: str) -> list[tuple[int, str]]:
    """The ordinal words of a text ("second", "third"...) as (rank, word)."""
    return [(_ORDINALS[w.lower()], w) for w in _WORD.findall(text) if w.lower() in _ORDINALS]


def _figures(claim: str, evidence: str) -> list[Finding]:
    stated = figures(evidence)
    values = {v for v, _ in stated}
    out = []
    # a rank only where the evidence ranks too ("first" is often just "at first")
    ranked = {rank for rank, _ in ordinals(evidence)}
    if ranked:
        for rank, word in ordinals(claim):
            if rank not in ranked:
                said = ", ".join(w for _, w in ordinals(evidence))
                out.append(
                    Finding(
                        "figure",
                        word,
                        said,
                        f"the evidence does not rank it {word} (it says {said})",
                    )
                )
    for value, written in figures(claim):
        if value not in values:
            said = ", ".join(w for _, w in stated[:4])
            out.append(Finding("figure", written, said,
                               f"the evidence does not give {written}"
                               + (f" (it says {said})" if said else "")))  # fmt: skip
    return out


def _codes(text: str) -> set[str]:
    """The codes of a text: letters with digits (``IP67``, not ``5-year``), capitals."""
    return {c for c in _CODE.findall(text) if not _MEASURE.match(c)} | set(_ACRONYM.findall(text))


def _codes_and_names(claim: str, evidence: str) -> list[Finding]:
    lowered = evidence.lower()
    stems = {_stem(w.strip("'\u2019")) for w in _WORD.findall(evidence)}
    codes = _codes(claim)
    out = []
    for code in sorted(codes):
        if not code.isdigit() and not re.search(rf"\b{re.escape(code)}\b", evidence, re.I):
            said = ", ".join(sorted(_codes(evidence))[:4])
            out.append(Finding("code", code, said, f"the evidence does not name {code}"
                               + (f" (it names {said})" if said else "")))  # fmt: skip
    words = _WORD.findall(claim)
    for i, word in enumerate(words):
        bare = word.strip("'\u2019")
        if i == 0 or not bare[:1].isupper() or bare in codes:
            continue
        if bare.lower() in _COMMON_CAPITALS or words[i - 1].endswith(":"):
            continue
        if _stem(bare) not in stems and bare.lower() not in lowered:
            out.append(Finding("name", bare, "", f"the evidence does not mention {bare}"))
    return out


def _attributes(claim: str, evidence: str) -> list[Finding]:
    tokens = [w.lower() for w in _WORD.findall(claim)]
    theirs = [w.lower() for w in _WORD.findall(evidence)]
    evidence_words = set(theirs)
    stems = {_stem(w) for w in evidence_words}
    pairs = set(itertools.pairwise(theirs))
    out = []
    for i, word in enumerate(tokens):
        kind = _CLASS_OF.get(word)
        if kind is None:
            continue
        listed = sorted(w for w in evidence_words if _CLASS_OF.get(w) == kind)
        said = ", ".join(listed)
        if _stem(word) not in stems:
            out.append(Finding("attribute", word, said, f"the evidence does not say {word}"
                               + (f" (its {kind}: {said})" if said else "")))  # fmt: skip
            continue
        # "moss grey" where the evidence has "slate grey and moss green": each word is
        # there, not together
        before = tokens[i - 1] if i else ""
        if before in evidence_words and before not in _STOP and (before, word) not in pairs:
            named = next((b for a, b in pairs if a == before and _CLASS_OF.get(b) == kind), "")
            if named and named != word:
                out.append(
                    Finding(
                        "attribute",
                        f"{before} {word}",
                        f"{before} {named}",
                        f"the evidence says {before} {named}, not {before} {word}",
                    )
                )
    return out


def _polarity(claim: str, evidence: str) -> list[Finding]:
    """Clause by clause: each clause of the claim against the evidence clause most like
    it (a negation elsewhere in the evidence says nothing about this one)."""
    theirs = [c for c in _CLAUSE.split(evidence) if c.strip()]
    for clause in _CLAUSE.split(claim):
        words = _plain_words(clause)
        if not words or not theirs:
            continue
        match = max(theirs, key=lambda c: len(words & _plain_words(c)))
        # only a clause that says the same thing can say it the other way
        if len(words & _plain_words(match)) < max(1, len(words) / 2):
            continue
        claim_neg = len(_NEGATIONS.findall(clause))
        evidence_neg = len(_NEGATIONS.findall(match))
        clause_words = {w.lower() for w in _WORD.findall(clause)}
        match_words = {w.lower() for w in _WORD.findall(match)}
        flipped = [
            (w, _OPPOSITE[w]) for w in sorted(clause_words)
            if w in _OPPOSITE and _OPPOSITE[w] in match_words and w not in match_words
        ]  # fmt: skip
        if (claim_neg != evidence_neg) == bool(flipped):
            continue
        if flipped:
            word, opposite = flipped[0]
            return [
                Finding(
                    "polarity",
                    word,
                    opposite,
                    f"the claim says {word!r} where the evidence says {opposite!r}",
                )
            ]
        says = "negates" if claim_neg else "affirms"
        return [Finding("polarity", clause.strip()[:60], match.strip()[:60],
                        f"the claim {says} what the evidence "
                        + ("negates" if evidence_neg else "affirms")
                        + f": {match.strip()[:80]!r}")]  # fmt: skip
    return []


def _added_clause(claim: str, evidence: str) -> list[Finding]:
    """A clause the evidence says nothing of, beside clauses it states word for word: a
    supported sentence with a fact added to it ("..., and it won an award in 2019").
    A claim reworded throughout is left to the overall scores (and the embeddings)."""
    known = {_stem(w) for w in _WORD.findall(evidence)}
    covered = []
    for clause in _CLAUSE.split(claim):
        words = {_stem(w) for w in _WORD.findall(clause) if len(w) > 3}
        if words:
            covered.append((len(words & known) / len(words), len(words), clause.strip()))
    if not any(share >= 0.8 and size >= 2 for share, size, _ in covered):
        return []
    return [
        Finding("clause", clause[:80], "", f"the evidence says nothing of {clause[:80]!r}")
        for share, size, clause in covered
        if size >= 3 and share < 0.34
    ]


def _comparison(claim: str, evidence: str) -> list[Finding]:
    words = [w.lower() for w in _WORD.findall(claim)]
    direction = next(((i, _COMPARATIVES[w]) for i, w in enumerate(words) if w in _COMPARATIVES),
                     None)  # fmt: skip
    if direction is None:
        return []
    at, sign = direction
    word = words[at]
    if word in ("more", "less") and words[at + 1 : at + 2] and words[at + 1] in _BACKWARD:
        sign, word = -sign, f"{word} {words[at + 1]}"  # "more slowly" says "slower"
    theirs = [w.lower() for w in _WORD.findall(evidence)]
    stated = [_COMPARATIVES[w] for w in theirs if w in _COMPARATIVES]
    if stated:
        if sign in stated or not all(s == -sign for s in stated):
            return []
        return [Finding("comparison", word, "", f"the evidence compares the other way ({word!r})")]
    # no comparison in the evidence: the order of its figures, subject by subject
    subject = [w for w in words[:at] if len(w) > 3 and not _NUMBER_WORDS.get(w)]
    other = words[at + 1 :]
    if "than" in other:
        other = other[other.index("than") + 1 :]
    first = _figure_after(evidence, subject)
    second = _figure_after(evidence, [w for w in other if len(w) > 3], skip=first)
    if first is None or second is None or first[0] == second[0]:
        return []
    if (first[1] > second[1]) == (sign > 0):
        return []
    return [Finding("comparison", word, f"{first[2]} against {second[2]}",
                    f"the evidence's figures say the opposite of {word!r}"
                    f" ({first[2]} against {second[2]})")]  # fmt: skip


def _figure_after(
    evidence: str, subject: list[str], skip: tuple[int, float, str] | None = None
) -> tuple[int, float, str] | None:
    """The first figure after the last place the evidence mentions ``subject``:
    (position, value, as written)."""
    low = evidence.lower()
    starts = [low.find(_stem(w)) for w in subject if low.find(_stem(w)) >= 0]
    if not starts:
        return None
    start = max(starts)
    for match in _NUMBER.finditer(evidence):
        if match.start() > start and (skip is None or match.start() != skip[0]):
            return match.start(), float(match.group(1).replace(",", "")), match.group(0)
    return None


def _plain_words(text: str) -> set[str]:
    """A clause's words for matching clauses: stemmed, without negations and short words."""
    return {
        _stem(w) for w in _WORD.findall(text)
        if len(w) > 3 and w.lower() not in _NEGATION_WORDS and "'" not in w
    }  # fmt: skip


def _stem(word: str) -> str:
    """A crude stem: a plural or verb ending off, then the first five letters."""
    word = word.lower()
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:5]
