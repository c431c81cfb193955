"""Cutting documents into chunks for the knowledge base.

A chunk is at most about ``size`` characters of one section: the text under a
Markdown heading. A heading is a ``#`` line outside code fences, whether or not
blank lines surround it (``# Refunds`` directly above its text is the common
way to write Markdown). Paragraphs are kept whole when they fit; a longer one is
cut after a sentence, else between words, else anywhere, so that no chunk can
carry a whole unbroken file into a context window.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

CHUNK_CHARS = 800
OVERLAP_CHARS = 120
#: changes whenever the same text would be cut differently: a knowledge base indexes
#: every file again once, instead of keeping chunks an older cut made
CHUNKING = "2"

_HEADING = re.compile(r"#{1,6}\s+(.*)")
_FENCE = ("```", "~~~")
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")


@dataclass
class Chunk:
    """A piece of a document: its text, the heading it sits under, where it starts."""

    text: str
    heading: str
    position: int


def chunk(text: str, *, size: int = CHUNK_CHARS, overlap: int = OVERLAP_CHARS) -> list[Chunk]:
    """Cut ``text`` into chunks of about ``size`` characters along paragraphs; each
    chunk knows the heading above it and overlaps the previous one of its section
    by ``overlap`` characters."""
    chunks: list[Chunk] = []
    heading, buffer, start = "", "", 0

    def flush() -> None:
        if buffer.strip():
            chunks.append(Chunk(buffer.strip(), heading, start))

    for title, paragraph, position in _blocks(text):
        if title is not None:
            flush()
            heading, buffer = title, ""
            continue
        # pieces leave room for the overlap a chunk starts with
        for piece, at in _pieces(paragraph, position, max(size - overlap, size // 2)):
            if buffer and len(buffer) + len(piece) > size:
                flush()
                tail = buffer.rstrip()[-overlap:] if overlap else ""
                buffer = tail[tail.find(" ") + 1 :] + "\n\n" if " " in tail else ""
                start = at
            if not buffer:
                start = at
            buffer += piece + "\n\n"
    flush()
    return chunks


def _blocks(text: str) -> Iterator[tuple[str | None, str, int]]:
    """The headings and paragraphs of ``text`` in order, with their offsets:
    ``(title, "", offset)`` for a heading, ``(None, paragraph, offset)`` otherwise.
    Blank lines inside a code fence do not end its paragraph."""
    lines: list[str] = []
    start = offset = 0
    fenced = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        heading = None if fenced else _HEADING.fullmatch(stripped)
        if stripped.startswith(_FENCE):
            fenced = not fenced
        if heading is not None or (not stripped and not fenced):
            if lines:
                yield None, "".join(lines).strip(), start
                lines = []
            if heading is not None and heading.group(1).strip():
                yield heading.group(1).strip(), "", offset
        else:
            if not lines:
                start = offset
            lines.append(line)
        offset += len(line)
    if lines:
        yield None, "".join(lines).strip(), start


def _pieces(paragraph: str, position: int, size: int) -> Iterator[tuple[str, int]]:
    """``paragraph`` whole when it fits in ``size``, else in pieces of at most
    ``size`` characters, cut after a sentence, else between words, else anywhere."""
    begin = 0
    while len(paragraph) - begin > size:
        window = paragraph[begin : begin + size]
        ends = [m.end() for m in _SENTENCE_END.finditer(window)]
        cut = ends[-1] if ends and ends[-1] > size // 2 else window.rfind(" ") + 1
        if cut <= size // 2:
            cut = size
        piece = window[:cut].strip()
        if piece:
            yield piece, position + begin
        begin += cut
        while begin < len(paragraph) and paragraph[begin].isspace():
            begin += 1
    rest = paragraph[begin:].strip()
    if rest:
        yield rest, position + begin
