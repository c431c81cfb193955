"""A small lexical retriever over a folder of Markdown files (BM25 over paragraphs)."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

from pilothouse import Passage, Retriever

_WORD = re.compile(r"[a-z0-9]+")


def _terms(text: str) -> list[str]:
    return [w[:6] for w in _WORD.findall(text.lower()) if len(w) > 2]


class CorpusRetriever(Retriever):
    """Ranks the sentences-groups (paragraphs) of ``folder``'s Markdown files with BM25."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.passages: list[Passage] = []
        for path in sorted(folder.glob("*.md")):
            heading = ""
            for i, block in enumerate(path.read_text(encoding="utf-8").split("\n\n")):
                block = block.strip()
                if block.startswith("#") and "\n" not in block:
                    heading = block.lstrip("# ")
                    continue
                if block.startswith("#"):
                    heading, _, block = block.partition("\n")
                    heading = heading.lstrip("# ")
                self.passages.append(
                    Passage(
                        id=f"{path.stem}#{i}",
                        text=block,
                        source=path.name,
                        metadata={"heading": heading},
                    )
                )
        self._tf = [Counter(_terms(p.text)) for p in self.passages]
        self._avg = sum(sum(tf.values()) for tf in self._tf) / max(1, len(self._tf))
        df: Counter[str] = Counter()
        for tf in self._tf:
            df.update(tf.keys())
        n = len(self._tf)
        self._idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}

    async def search(self, query: str, *, k: int = 4) -> list[Passage]:
        """BM25 (k1 = 1.2, b = 0.75), best first; passages with no shared term are left out."""
        terms = set(_terms(query))
        scored = []
        for passage, tf in zip(self.passages, self._tf, strict=True):
            length = sum(tf.values())
            score = 0.0
            for t in terms & tf.keys():
                f = tf[t]
                score += self._idf[t] * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * length / self._avg))
            if score > 0:
                scored.append((score, passage))
        scored.sort(key=lambda pair: -pair[0])
        return [p.model_copy(update={"score": round(s, 4)}) for s, p in scored[:k]]
