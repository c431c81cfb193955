"""A BM25 index made for top-k (``tantivy``) of one collection's chunks.

FTS5 scores every row that holds any of the query's words before it sorts them:
at a million chunks a common word costs tens of milliseconds. tantivy skips the
blocks of its posting lists that cannot reach the top k (block-max WAND), so the
cost follows k, not the corpus (``bench/bench_knowledge.py``).

Like the vector index, it is derived from the SQLite file (which keeps FTS5 as the
exact keyword index, and the truth): a folder beside the database, rebuilt by
``pilothouse ingest --reindex``. tantivy commits atomically; the change-log entry a
commit includes is written after it, in a file of its own, so a crash between the
two only makes the next catch-up apply some changes again, and applying a change
twice (delete the chunk's id, add its current text) gives the same index.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def _tantivy() -> Any:
    try:
        import tantivy
    except ImportError as exc:
        raise ConfigError(
            "the knowledge base's keyword index needs tantivy: pip install 'pilothouse[knowledge]'"
        ) from exc
    return tantivy


class KeywordBusy(Exception):
    """Another process is writing the keyword index (tantivy allows one writer)."""


class KeywordIndex:
    """One collection's BM25 index: the chunks' ids and their heading and text."""

    def __init__(self, folder: Path, table: str) -> None:
        self.path = folder / f"{table}.tantivy"
        self._mark = folder / f"{table}.tantivy.seq"
        #: the change-log entry the searcher in use includes at least (-1: none)
        self.seq = -1
        self._index: Any = None
        self._schema: Any = None

    def exists(self) -> bool:
        """Whether a build was ever committed."""
        return self._mark.exists()

    def _open(self, *, create: bool = False) -> Any:
        if self._index is None:
            tantivy = _tantivy()
            builder = tantivy.SchemaBuilder()
            builder.add_unsigned_field("id", stored=True, indexed=True)
            builder.add_text_field("text", stored=False)
            self._schema = builder.build()
            if create:
                self.path.mkdir(parents=True, exist_ok=True)
            self._index = tantivy.Index(self._schema, path=str(self.path), reuse=True)
        return self._index

    def refresh(self) -> bool:
        """Search the newest commit; False when there is none. The mark is read before
        the commit is opened, so the searcher includes at least what the mark says."""
        try:
            seq = int(self._mark.read_text())
        except (FileNotFoundError, ValueError):
            return False
        if seq != self.seq or self._index is None:  # a newer commit: search it
            self._open().reload()
            self.seq = seq
        return True

    def search(
        self, terms: list[str], count: int, allowed: set[int] | None
    ) -> list[tuple[float, int]]:
        """(BM25 score, id) of the ``count`` chunks that best match any of ``terms``,
        among ``allowed`` when it is given; best first."""
        tantivy = _tantivy()
        query = tantivy.Query
        words = query.boolean_query(
            [(tantivy.Occur.Should, query.term_query(self._schema, "text", t)) for t in terms]
        )
        if allowed is not None:
            words = query.boolean_query([
                (tantivy.Occur.Must, words),
                (tantivy.Occur.Must, query.term_set_query(self._schema, "id", sorted(allowed))),
            ])  # fmt: skip
        searcher = self._index.searcher()
        hits = searcher.search(words, count).hits
        return [(score, searcher.doc(address)["id"][0]) for score, address in hits]

    def write(self, seq: int, rows: Iterable[tuple[int, str | None]], *, rebuild: bool) -> None:
        """Apply (id, text) rows (text None: the chunk is gone) and commit them as
        including change-log entry ``seq``; ``rebuild`` starts from nothing."""
        tantivy = _tantivy()
        if rebuild:
            self._index = None
            self._mark.unlink(missing_ok=True)
            shutil.rmtree(self.path, ignore_errors=True)
        index = self._open(create=True)
        try:
            writer = index.writer(heap_size=64_000_000, num_threads=1)
        except ValueError as exc:
            raise KeywordBusy(str(exc)) from exc
        for rowid, text in rows:
            if not rebuild:
                writer.delete_documents_by_term("id", rowid)
            if text is not None:
                document = tantivy.Document()
                document.add_unsigned("id", rowid)
                document.add_text("text", text)
                writer.add_document(document)
        writer.commit()
        writer.wait_merging_threads()
        index.reload()  # this process's searches see the commit at once
        temporary = self._mark.with_suffix(".tmp")
        temporary.write_text(str(seq))
        os.replace(temporary, self._mark)
        self.seq = seq

    def drop(self) -> None:
        """Delete the index (the collection no longer needs one)."""
        self._index, self.seq = None, -1
        self._mark.unlink(missing_ok=True)
        shutil.rmtree(self.path, ignore_errors=True)
