"""Plain-text helpers shared by the audits: content words, sentences, claims."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)?")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_CITATION = re.compile(r"\s*(\[[^\]]*\]|\(tool\))")
STOP_WORDS = frozenset(
    """
    a an and are as at be been by for from has have in is it its of on or our that the their
    this to was we were will with you your what which who how into about than then them they
    also can may more most much such very just only all any each every both it's not no
    """.split()
)


def content_words(text: str) -> set[str]:
    """Lower-cased content words, crudely stemmed (six letters); numbers kept whole."""
    words = set()
    for word in _WORD.findall(text.lower()):
        if word in STOP_WORDS:
            continue
        words.add(word if word[0].isdigit() else word[:6])
    return words


def sentences(text: str) -> list[str]:
    """The non-empty sentences and lines of a text."""
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def claims(text: str) -> list[str]:
    """The sentences and list items of an output, citations and bullets removed."""
    found = []
    for part in _SENTENCE.split(text):
        part = _CITATION.sub("", part).strip().lstrip("-*#>0123456789. ").strip()
        if part and not part.endswith(":"):
            found.append(part)
    return found
