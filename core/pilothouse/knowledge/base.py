"""The knowledge base: documents cut into chunks, with vectors (sqlite-vec) and
full text (FTS5), in one SQLite file in the workspace (``knowledge.db``).

Search is hybrid: the k nearest vectors and the best BM25 matches, fused by
reciprocal rank. Ingesting is incremental: a file whose content hash has not
changed is skipped, a changed one has its chunks replaced, a file gone from
an ingested folder has its chunks removed.

The Python many machines have (pyenv builds among them) cannot load SQLite
extensions; :func:`connect` then uses ``sqlean`` (``sqlean.py`` on PyPI), a
drop-in ``sqlite3`` that can.
"""

from __future__ import annotations

import hashlib
import html.parser
import json
import re
import sqlite3
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..embedding import Embedder
from ..errors import ConfigError, PilothouseError
from ..retrieval import Passage
from ..text import STOP_WORDS
from .chunking import CHUNKING, chunk

SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm", ".pdf"}
RRF_K = 60


class KnowledgeError(PilothouseError):
    """The knowledge base cannot do what was asked (the message says why)."""

    kind = "knowledge"


class NotText(KnowledgeError):
    """A file that is not text: skipped, and what an earlier ingest had of it is dropped."""


def connect(path: str | Path, *, prefer: str = "sqlite3") -> Any:
    """A connection with sqlite-vec loaded: the standard module when it can load
    extensions, else ``sqlean``; a clear error when neither can."""
    try:
        import sqlite_vec
    except ImportError as exc:
        raise ConfigError(
            "the knowledge base needs sqlite-vec: pip install 'pilothouse[knowledge]'"
        ) from exc
    modules: list[Any] = []
    if prefer == "sqlite3" and hasattr(sqlite3.connect(":memory:"), "enable_load_extension"):
        modules.append(sqlite3)
    try:
        import sqlean

        modules.append(sqlean)
    except ImportError:
        pass
    for module in modules:
        db = module.connect(str(path), timeout=30, check_same_thread=False)
        db.enable_load_extension(True)
        sqlite_vec.load(db)
        db.enable_load_extension(False)
        return db
    raise ConfigError(
        "this Python's sqlite3 cannot load extensions (sqlite-vec) and sqlean is not"
        " installed: pip install sqlean.py"
    )


@dataclass
class IngestReport:
    """What an ingest did."""

    files: int = 0
    unchanged: int = 0
    updated: int = 0
    removed: int = 0
    chunks: int = 0
    #: files that could not be read, with the reason (the others are indexed)
    failed: list[str] = field(default_factory=list)


class _TextOfHTML(html.parser.HTMLParser):
    """Visible text of an HTML page, headings kept as Markdown headings."""

    SKIP = {"script", "style", "head", "noscript"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in ("p", "div", "li", "br", "tr", "section", "article"):
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


#: the share of undecodable characters above which a file is taken for binary
NOT_TEXT_SHARE = 0.05


def _decoded(path: Path) -> str:
    """A text file's content as UTF-8 (a stray bad byte becomes U+FFFD); a file that is
    not text at all (a NUL byte, as git judges it, or mostly undecodable) is refused:
    indexed, it would fill search results and context windows with noise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KnowledgeError(f"cannot read {path}: {exc}") from exc
    text = data.decode("utf-8", errors="replace")
    if b"\x00" in data[:8000] or text.count("\ufffd") > NOT_TEXT_SHARE * len(text):
        raise NotText(f"{path}: not UTF-8 text (binary content?)")
    return text


def text_of(path: Path) -> str:
    """A file's text: Markdown and text as they are, HTML without its markup, PDF
    through pypdf (one paragraph break between pages)."""
    if path.suffix.lower() == ".pdf":
        try:
            from pypdf import PdfReader
        except ImportError as exc:
            raise ConfigError("PDF files need pypdf: pip install 'pilothouse[knowledge]'") from exc
        try:
            pages = PdfReader(path).pages
            return "\n\n".join((page.extract_text() or "").strip() for page in pages).strip()
        except Exception as exc:  # a damaged or encrypted file: name it, keep going is the caller's
            raise KnowledgeError(f"cannot read the PDF {path}: {exc}") from exc
    raw = _decoded(path)
    if path.suffix.lower() in (".html", ".htm"):
        parser = _TextOfHTML()
        parser.feed(raw)
        return re.sub(r"\n{3,}", "\n\n", "".join(parser.parts)).strip()
    return raw


def _blob(vector: Sequence[float]) -> bytes:
    return struct.pack(f"{len(vector)}f", *vector)


class KnowledgeBase:
    """Collections of chunks with vectors and full text, and hybrid search over them.

    This class keeps them in one SQLite file (sqlite-vec for the vectors, FTS5 for
    BM25); :class:`~.postgres.PgKnowledgeBase` keeps them in PostgreSQL (pgvector,
    full-text search). Reading files, chunking, embedding, skipping what did not
    change and fusing the two rankings are the same for both: a backend implements
    the storage methods (those starting with ``_`` below ``ingest`` and ``search``).
    """

    def __init__(self, path: str | Path, embedder: Embedder, *, prefer: str = "sqlite3") -> None:
        self.path = Path(path)
        #: where the knowledge base is, as messages name it
        self.location = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder
        self.db = connect(self.path, prefer=prefer)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS collections (
                name TEXT PRIMARY KEY, embedder TEXT NOT NULL, dimension INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS documents (
                collection TEXT NOT NULL, source TEXT NOT NULL, hash TEXT NOT NULL,
                PRIMARY KEY (collection, source));
            CREATE TABLE IF NOT EXISTS chunks (
                id INTEGER PRIMARY KEY, collection TEXT NOT NULL, source TEXT NOT NULL,
                heading TEXT NOT NULL, position INTEGER NOT NULL, text TEXT NOT NULL,
                tags TEXT NOT NULL DEFAULT '[]');
            CREATE INDEX IF NOT EXISTS chunks_source ON chunks (collection, source);
            CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
                text, heading, content='chunks', content_rowid='id');
            """
        )

    # -- collections ---------------------------------------------------------------

    def _vectors(self, collection: str) -> str:
        return "vec_" + hashlib.sha1(collection.encode()).hexdigest()[:12]

    def collection(self, name: str) -> None:
        """Create ``name`` for this embedder, or check it was built with this one."""
        row = self._collection_row(name)
        if row is None:
            self._add_collection(name)
            return
        embedder, dimension = row
        if (embedder, dimension) != (self.embedder.name, self.embedder.dimension):
            raise KnowledgeError(
                f"collection {name!r} was built with embedder {embedder!r} ({dimension}"
                f" dimensions); it cannot be used with {self.embedder.name!r}"
                f" ({self.embedder.dimension} dimensions). Re-ingest into another collection."
            )

    def has_collection(self, name: str) -> bool:
        """Whether anything was ever ingested into ``name``."""
        return self._collection_row(name) is not None

    # -- ingest ----------------------------------------------------------------------

    def ingest(
        self,
        paths: Iterable[str | Path],
        *,
        collection: str = "default",
        tags: Sequence[str] = (),
        progress: Callable[[str], None] | None = None,
        batch: int = 32,
    ) -> IngestReport:
        """Index new and changed files under ``paths``; drop files that disappeared
        from an ingested folder."""
        self.collection(collection)
        report = IngestReport()
        seen: set[str] = set()
        folders: list[str] = []
        for given in paths:
            root = Path(given).resolve()
            if not root.exists():
                raise KnowledgeError(f"no such file or folder: {given}")
            if root.is_dir():
                folders.append(str(root))
                files = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES)
            else:
                files = [root]
            for file in files:
                source = str(file)
                seen.add(source)
                report.files += 1
                if progress:
                    progress(source)
                try:
                    text = text_of(file)
                except NotText as exc:
                    report.failed.append(str(exc))
                    # it will not become text by itself: nothing to keep
                    self._forget(collection, source)
                    continue
                except KnowledgeError as exc:
                    report.failed.append(str(exc))
                    seen.discard(source)  # keep what an earlier ingest had of it
                    continue
                # the chunker's version is part of the digest: a new cut re-indexes
                digest = hashlib.sha256(f"{CHUNKING}\n{text}".encode()).hexdigest()
                if self._known(collection, source) == digest:
                    report.unchanged += 1
                    continue
                pieces = chunk(text)
                vectors: list[list[float]] = []
                for start in range(0, len(pieces), batch):
                    part = pieces[start : start + batch]
                    vectors += self.embedder.embed([f"{c.heading}\n{c.text}" for c in part])
                self._replace(collection, source, digest, pieces, vectors, list(tags))
                report.updated += 1
                report.chunks += len(pieces)
        for folder in folders:
            unreadable = {f.split(": ", 1)[0] for f in report.failed}
            for source in self._indexed_under(collection, folder.rstrip("/") + "/"):
                if source not in seen and not any(source in u for u in unreadable):
                    self._forget(collection, source)
                    report.removed += 1
        return report

    def _known(self, collection: str, source: str) -> str | None:
        """The digest the file had when it was last indexed."""
        row = self.db.execute(
            "SELECT hash FROM documents WHERE collection = ? AND source = ?",
            (collection, source),
        ).fetchone()
        return row[0] if row else None

    def _collection_row(self, name: str) -> tuple[str, int] | None:
        """(embedder, dimension) of a collection, or None when there is none."""
        return self.db.execute(
            "SELECT embedder, dimension FROM collections WHERE name = ?", (name,)
        ).fetchone()

    def _add_collection(self, name: str) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO collections VALUES (?, ?, ?)",
                (name, self.embedder.name, self.embedder.dimension),
            )
            self.db.execute(
                f"CREATE VIRTUAL TABLE {self._vectors(name)} USING vec0("
                f"embedding float[{self.embedder.dimension}] distance_metric=cosine)"
            )

    def _replace(
        self,
        collection: str,
        source: str,
        digest: str,
        pieces: Sequence[Any],
        vectors: Sequence[Sequence[float]],
        tags: list[str],
    ) -> None:
        """A file's chunks in place of what it had, with its digest, at once."""
        with self.db:
            self._remove(collection, source)
            for piece, vector in zip(pieces, vectors, strict=True):
                cursor = self.db.execute(
                    "INSERT INTO chunks (collection, source, heading, position, text, tags)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (collection, source, piece.heading, piece.position, piece.text,
                     json.dumps(tags)),
                )  # fmt: skip
                rowid = cursor.lastrowid
                self.db.execute(
                    "INSERT INTO chunks_fts (rowid, text, heading) VALUES (?, ?, ?)",
                    (rowid, piece.text, piece.heading),
                )
                self.db.execute(
                    f"INSERT INTO {self._vectors(collection)} (rowid, embedding) VALUES (?, ?)",
                    (rowid, _blob(vector)),
                )
            self.db.execute(
                "INSERT OR REPLACE INTO documents VALUES (?, ?, ?)", (collection, source, digest)
            )

    def _indexed_under(self, collection: str, folder: str) -> list[str]:
        """The sources indexed from under ``folder`` (ending in a slash)."""
        rows = self.db.execute(
            "SELECT source FROM documents WHERE collection = ? AND source LIKE ?",
            (collection, folder + "%"),
        ).fetchall()
        return [source for (source,) in rows]

    def _forget(self, collection: str, source: str) -> None:
        """Drop a file from the index: its chunks and its record, at once."""
        with self.db:
            self._remove(collection, source)
            self.db.execute(
                "DELETE FROM documents WHERE collection = ? AND source = ?", (collection, source)
            )

    def _remove(self, collection: str, source: str) -> None:
        rows = self.db.execute(
            "SELECT id, text, heading FROM chunks WHERE collection = ? AND source = ?",
            (collection, source),
        ).fetchall()
        for rowid, text, heading in rows:
            self.db.execute(
                "INSERT INTO chunks_fts (chunks_fts, rowid, text, heading)"
                " VALUES ('delete', ?, ?, ?)",
                (rowid, text, heading),
            )
            self.db.execute(f"DELETE FROM {self._vectors(collection)} WHERE rowid = ?", (rowid,))
        self.db.execute(
            "DELETE FROM chunks WHERE collection = ? AND source = ?", (collection, source)
        )

    # -- search ----------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        k: int = 5,
        collection: str = "default",
        source: str | None = None,
        tag: str | None = None,
    ) -> list[Passage]:
        """The ``k`` best chunks: vector and keyword ranks fused (reciprocal rank fusion)."""
        self.collection(collection)
        depth = max(k * 4, 20)
        (vector,) = self.embedder.embed([query])
        nearest = self._nearest(collection, vector, depth)
        # Stop words would let BM25 "match" every chunk and outvote the vectors.
        terms = [w for w in re.findall(r"\w+", query.lower()) if w not in STOP_WORDS]
        lexical = self._lexical(collection, terms, depth) if terms else []
        scores: dict[int, float] = {}
        for ranking in (nearest, lexical):
            for rank, rowid in enumerate(ranking):
                scores[rowid] = scores.get(rowid, 0.0) + 1.0 / (RRF_K + rank + 1)
        rows = self._chunks(list(scores), collection)  # one read for every candidate
        passages = []
        for rowid in sorted(scores, key=lambda r: -scores[r]):
            if rowid not in rows:
                continue
            chunk_source, heading, text, tags = rows[rowid]
            if source and source not in chunk_source:
                continue
            if tag and tag not in json.loads(tags):
                continue
            passages.append(Passage(
                id=f"{Path(chunk_source).name}#{rowid}", text=text, source=chunk_source,
                score=round(scores[rowid], 5), metadata={"heading": heading},
            ))  # fmt: skip
            if len(passages) == k:
                break
        return passages

    def _nearest(self, collection: str, vector: Sequence[float], depth: int) -> list[int]:
        """The ids of the ``depth`` chunks nearest to ``vector`` (cosine), nearest first."""
        rows = self.db.execute(
            f"SELECT rowid, distance FROM {self._vectors(collection)}"
            " WHERE embedding MATCH ? AND k = ? ORDER BY distance",
            (_blob(vector), depth),
        ).fetchall()
        return [rowid for rowid, _ in rows]

    def _lexical(self, collection: str, terms: list[str], depth: int) -> list[int]:
        """The ids of the ``depth`` chunks that best match any of ``terms`` (BM25)."""
        words = " OR ".join(f'"{w}"' for w in terms)
        rows = self.db.execute(
            "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?"
            " ORDER BY bm25(chunks_fts) LIMIT ?",
            (words, depth),
        ).fetchall()
        return [rowid for rowid, _ in rows]

    def _chunks(self, ids: list[int], collection: str) -> dict[int, tuple[str, str, str, str]]:
        """(source, heading, text, tags as JSON) of the chunks among ``ids`` in ``collection``."""
        marks = ", ".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT id, source, heading, text, tags FROM chunks WHERE id IN ({marks})"
            " AND collection = ?",
            (*ids, collection),
        )
        return {row[0]: row[1:] for row in rows}

    def close(self) -> None:
        """Close the file."""
        self.db.close()
