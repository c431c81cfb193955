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
import json
import re
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..embedding import Embedder
from ..errors import ConfigError
from ..retrieval import Passage
from ..text import STOP_WORDS
from .ingesting import IngestReport, ingest_files
from .keywordindex import KeywordBusy, KeywordIndex
from .reading import KnowledgeError
from .vectorindex import VectorIndex

RRF_K = 60
#: a filter that keeps at most this many chunks is searched exactly over those chunks
EXACT_UP_TO = 20_000


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


def _blob(vector: Sequence[float]) -> bytes:
    return struct.pack(f"{len(vector)}f", *vector)


def _cosine(keys: Sequence[int], vectors: Any, query: Any) -> list[tuple[float, int]]:
    """(cosine distance to the unit ``query``, key) for each row of ``vectors``."""
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1)
    distances = 1.0 - (vectors @ query) / np.maximum(norms, 1e-12)
    return [(d, k) for d, k in zip(distances.tolist(), keys, strict=True) if d == d]  # NaN: absent


class KnowledgeBase:
    """Collections of chunks with vectors and full text, and hybrid search over them.

    This class keeps them in one SQLite file (sqlite-vec for the vectors, FTS5 for
    BM25); :class:`~.postgres.PgKnowledgeBase` keeps them in PostgreSQL (pgvector,
    full-text search). Reading files, chunking, embedding, skipping what did not
    change and fusing the two rankings are the same for both: a backend implements
    the storage methods (those starting with ``_`` below ``ingest`` and ``search``).
    """

    def __init__(
        self, path: str | Path, embedder: Embedder, *, prefer: str = "sqlite3",
        index_from: int = 10_000,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        #: the size from which a collection's vectors get an approximate index
        self.index_from = index_from
        self._indexes: dict[str, VectorIndex] = {}
        self._keyword_indexes: dict[str, KeywordIndex] = {}
        # searches from several threads (the retriever's) share one connection and index
        self._lock = threading.Lock()
        #: where the knowledge base is, as messages name it
        self.location = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder
        self.db = connect(self.path, prefer=prefer)
        try:
            self._set_up()
        except Exception as exc:  # sqlite3's or sqlean's DatabaseError, by the driver used
            self.db.close()
            text = " ".join(str(exc).split())
            raise KnowledgeError(
                f"cannot open the knowledge base {self.path}: {text} (move the file away, or"
                " point the workspace elsewhere, and ingest again)"
            ) from exc

    def _set_up(self) -> None:
        """WAL, the tables, and what an older knowledge base lacks."""
        self.db.execute("PRAGMA journal_mode=WAL")
        tagged = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'document_tags'"
        ).fetchone()
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
                tags TEXT NOT NULL DEFAULT '[]', meta TEXT NOT NULL DEFAULT '{}');
            CREATE INDEX IF NOT EXISTS chunks_source ON chunks (collection, source);
            CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
                text, heading, content='chunks', content_rowid='id');
            -- the chunks each change touched, in order: what the derived indexes have
            -- not yet taken in (each records the last seq it includes)
            CREATE TABLE IF NOT EXISTS index_log (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, collection TEXT NOT NULL,
                chunk INTEGER NOT NULL);
            -- up to which seq the log was emptied (a saved index includes it)
            CREATE TABLE IF NOT EXISTS index_state (
                collection TEXT PRIMARY KEY, trimmed INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS document_tags (
                collection TEXT NOT NULL, tag TEXT NOT NULL, source TEXT NOT NULL,
                PRIMARY KEY (collection, tag, source));
            """
        )
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(chunks)")}
        if "meta" not in columns:  # a knowledge base from before metadata
            with self.db:
                self.db.execute("ALTER TABLE chunks ADD COLUMN meta TEXT NOT NULL DEFAULT '{}'")
        if not tagged:  # a knowledge base from before the table: fill it once
            with self.db:
                self.db.execute(
                    "INSERT OR IGNORE INTO document_tags SELECT DISTINCT c.collection,"
                    " t.value, c.source FROM chunks c, json_each(c.tags) t"
                )

    # -- collections ---------------------------------------------------------------

    def _vectors(self, collection: str) -> str:
        return "vec_" + hashlib.sha1(collection.encode()).hexdigest()[:12]

    @property
    def index_folder(self) -> Path:
        """Where the derived indexes live: ``<file>-index/`` beside the database."""
        return self.path.with_name(self.path.name + "-index")

    def _index(self, collection: str) -> VectorIndex:
        """The approximate vector index of ``collection``."""
        if collection not in self._indexes:
            self._indexes[collection] = VectorIndex(
                self.index_folder, self._vectors(collection), self.embedder.dimension
            )
        return self._indexes[collection]

    def _keywords(self, collection: str) -> KeywordIndex:
        """The BM25 index of ``collection``."""
        if collection not in self._keyword_indexes:
            self._keyword_indexes[collection] = KeywordIndex(
                self.index_folder, self._vectors(collection)
            )
        return self._keyword_indexes[collection]

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
        metadata: Mapping[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
        batch: int = 32,
        reindex: bool = False,
    ) -> IngestReport:
        """Index new and changed files under ``paths``; drop files that disappeared
        from an ingested folder; then bring the derived indexes up to date (``reindex``:
        rebuild them from the chunks). ``tags`` and ``metadata`` go with every chunk."""
        self.collection(collection)
        report = ingest_files(paths, _Collection(self, collection), self.embedder, tags=tags,
                              metadata=metadata, progress=progress, batch=batch)  # fmt: skip
        report.index = self.sync_index(collection, rebuild=reindex)
        return report

    def sync_index(self, collection: str = "default", *, rebuild: bool = False) -> str:
        """Bring the collection's derived indexes (approximate vectors, BM25 for top-k)
        up to date with its chunks (what they lack is in the change log), or rebuild
        them from the chunks; a collection smaller than ``index_from`` has none (its
        exact scans are cheap). Says what it did."""
        vectors, keywords = self._index(collection), self._keywords(collection)
        table = self._vectors(collection)
        self.db.execute("BEGIN")  # one snapshot: the log's end and the chunks agree
        try:
            (last,) = self.db.execute(
                "SELECT max(coalesce((SELECT max(seq) FROM index_log WHERE collection = ?), 0),"
                " coalesce((SELECT trimmed FROM index_state WHERE collection = ?), 0))",
                (collection, collection),
            ).fetchone()
            (size,) = self.db.execute(
                "SELECT count(*) FROM chunks WHERE collection = ?", (collection,)
            ).fetchone()
            if size < self.index_from:
                vectors.drop()
                keywords.drop()
                did = "no index: exact scan"
            elif rebuild or not vectors.exists() or not keywords.exists():
                vectors.reset()
                vectors.update(self._all_vectors(table), [])
                keywords.write(last, self._texts(collection), rebuild=True)
                did = f"index built from {size} vectors"
            else:
                vectors.refresh()
                touched = self._touched(collection, vectors.seq)
                present = self._vectors_of(table, touched)
                gone = sorted(set(touched) - set(present))
                vectors.update([(list(present), list(present.values()))], gone)
                keywords.refresh()
                touched = self._touched(collection, keywords.seq)
                texts = dict(self._texts(collection, touched))
                try:
                    keywords.write(last, [(c, texts.get(c)) for c in touched], rebuild=False)
                except KeywordBusy:
                    last = keywords.seq  # another ingest writes it: keep the log for it
                did = f"index updated: {len(present)} in, {len(gone)} out"
        finally:
            self.db.commit()
        if size >= self.index_from:
            vectors.save(last)
        # both indexes include every change up to ``last``: the log can forget them
        with self.db:
            self.db.execute(
                "DELETE FROM index_log WHERE collection = ? AND seq <= ?", (collection, last)
            )
            self.db.execute(
                "INSERT INTO index_state VALUES (?, ?) ON CONFLICT (collection)"
                " DO UPDATE SET trimmed = max(trimmed, excluded.trimmed)",
                (collection, last),
            )
        return did

    def _touched(self, collection: str, after: int) -> list[int]:
        """The chunks the change log names after entry ``after``."""
        rows = self.db.execute(
            "SELECT DISTINCT chunk FROM index_log WHERE collection = ? AND seq > ?",
            (collection, after),
        )
        return [chunk for (chunk,) in rows]

    def _texts(
        self, collection: str, ids: Sequence[int] | None = None
    ) -> Iterable[tuple[int, str]]:
        """(id, heading and text) of the collection's chunks, or of those of ``ids``."""
        if ids is None:
            yield from self.db.execute(
                "SELECT id, heading || char(10) || text FROM chunks WHERE collection = ?",
                (collection,),
            )
            return
        yield from self._by_ids(
            "SELECT id, heading || char(10) || text FROM chunks WHERE id IN", ids
        )

    def _by_ids(self, select: str, ids: Sequence[int], page: int = 500) -> Iterable[Any]:
        """The rows of ``select`` (ending in ``WHERE ... IN``) for ``ids``, a page at a time."""
        for start in range(0, len(ids), page):
            yield from self.db.execute(
                f"{select} (SELECT value FROM json_each(?))",
                (json.dumps(list(ids[start : start + page])),),
            )

    def _all_vectors(self, table: str, page: int = 20_000) -> Iterable[tuple[list[int], Any]]:
        """Every (rowid, vector) of a vector table, a page at a time."""
        import numpy as np

        after = 0
        while True:
            rows = self.db.execute(
                f"SELECT rowid, embedding FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, page),
            ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield (
                [rowid for rowid, _ in rows],
                np.frombuffer(b"".join(blob for _, blob in rows), dtype=np.float32).reshape(
                    len(rows), -1
                ),
            )

    def _vectors_of(self, table: str, ids: Sequence[int]) -> dict[int, Any]:
        """The stored vectors of those of ``ids`` that exist."""
        import numpy as np

        rows = self._by_ids(f"SELECT rowid, embedding FROM {table} WHERE rowid IN", ids)
        return {rowid: np.frombuffer(blob, dtype=np.float32) for rowid, blob in rows}

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
        metadata: dict[str, str],
    ) -> None:
        """A file's chunks in place of what it had, with its digest, at once."""
        with self.db:
            self._remove(collection, source)
            self.db.executemany(
                "INSERT INTO document_tags VALUES (?, ?, ?)",
                [(collection, tag, source) for tag in dict.fromkeys(tags)],
            )
            for piece, vector in zip(pieces, vectors, strict=True):
                cursor = self.db.execute(
                    "INSERT INTO chunks (collection, source, heading, position, text, tags, meta)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (collection, source, piece.heading, piece.position, piece.text,
                     json.dumps(tags), json.dumps(metadata)),
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
                    "INSERT INTO index_log (collection, chunk) VALUES (?, ?)", (collection, rowid)
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
        """Delete a file's chunks, full text, vectors and tags (inside the caller's
        transaction); the change log records the chunks for the vector index."""
        self.db.execute(
            "INSERT INTO index_log (collection, chunk)"
            " SELECT collection, id FROM chunks WHERE collection = ? AND source = ?",
            (collection, source),
        )
        self.db.execute(
            "DELETE FROM document_tags WHERE collection = ? AND source = ?", (collection, source)
        )
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
        metadata: Mapping[str, str] | None = None,
        exact: bool = False,
    ) -> list[Passage]:
        """The ``k`` best chunks: vector and keyword ranks fused (reciprocal rank fusion).

        ``source`` keeps chunks whose source path contains it, ``tag`` those ingested
        with that tag, ``metadata`` those ingested with each of its keys equal to its
        value; both sides of the search look only among those. ``exact`` scans every
        vector instead of asking the approximate index."""
        self.collection(collection)
        depth = max(k * 4, 20)
        (vector,) = self.embedder.embed([query])
        with self._lock:
            allowed = self._allowed(collection, source, tag, dict(metadata or {}))
            if allowed is not None and not allowed:
                return []
            nearest = self._nearest(collection, vector, depth, allowed=allowed, exact=exact)
            # Stop words would let BM25 "match" every chunk and outvote the vectors.
            terms = [w for w in re.findall(r"\w+", query.lower()) if w not in STOP_WORDS]
            lexical = self._lexical(collection, terms, depth, allowed, exact=exact) if terms else []
            scores: dict[int, float] = {}
            for ranking in (nearest, lexical):
                for rank, rowid in enumerate(ranking):
                    scores[rowid] = scores.get(rowid, 0.0) + 1.0 / (RRF_K + rank + 1)
            rows = self._chunks(list(scores), collection)  # one read for every candidate
        passages = []
        for rowid in sorted(scores, key=lambda r: -scores[r]):
            if rowid not in rows:
                continue
            chunk_source, heading, text = rows[rowid]
            passages.append(Passage(
                id=f"{Path(chunk_source).name}#{rowid}", text=text, source=chunk_source,
                score=round(scores[rowid], 5), metadata={"heading": heading},
            ))  # fmt: skip
            if len(passages) == k:
                break
        return passages

    def _allowed(self, collection: str, source: str | None, tag: str | None,
                 metadata: dict[str, str] | None = None) -> set[int] | None:  # fmt: skip
        """The ids of the chunks the filters keep (None: no filter)."""
        if not source and not tag and not metadata:
            return None
        where, args = ["d.collection = ?"], [collection]
        if source:
            where.append("instr(d.source, ?) > 0")
            args.append(source)
        if tag:
            where.append(
                "d.source IN (SELECT source FROM document_tags WHERE collection = ? AND tag = ?)"
            )
            args += [collection, tag]
        for key, value in (metadata or {}).items():  # identifiers (Filters checks them)
            where.append("json_extract(c.meta, ?) = ?")
            args += [f'$."{key}"', value]
        rows = self.db.execute(
            "SELECT c.id FROM documents d JOIN chunks c"
            " ON c.collection = d.collection AND c.source = d.source WHERE " + " AND ".join(where),
            args,
        )
        return {rowid for (rowid,) in rows}

    def _nearest(
        self, collection: str, vector: Sequence[float], depth: int, *,
        allowed: set[int] | None = None, exact: bool = False,
    ) -> list[int]:  # fmt: skip
        """The ids of the ``depth`` chunks nearest to ``vector`` (cosine), nearest first,
        among ``allowed`` when it is given: from the approximate index when the
        collection has one, else (or when ``exact``) by scanning every vector."""
        import numpy as np

        index = self._index(collection)
        if exact or not index.refresh():
            return self._scan(collection, vector, depth, allowed)
        pending = self._pending(collection, index)
        if pending is None:  # the index was dropped meanwhile
            return self._scan(collection, vector, depth, allowed)
        query = np.asarray(vector, dtype=np.float32)
        query /= max(float(np.linalg.norm(query)), 1e-12)
        if allowed is not None and len(allowed) <= EXACT_UP_TO:
            # a narrow filter: every allowed vector, scored exactly
            keys = sorted(allowed - pending)
            scored = _cosine(keys, index.vectors(keys), query)
        else:
            # over-fetch as much as the filter thins the answer out
            thinning = 1 if allowed is None else -(-len(index) // max(len(allowed), 1))
            count = depth * thinning * 2 + len(pending)
            scored = [
                (distance, key) for key, distance in index.search(query, count)
                if key not in pending and (allowed is None or key in allowed)
            ]  # fmt: skip
            if len(scored) < depth and (allowed is None or len(scored) < len(allowed)):
                return self._scan(collection, vector, depth, allowed)
        # what changed since the index was saved: scored exactly, from the vectors' table
        fresh = self._vectors_of(self._vectors(collection), sorted(
            pending if allowed is None else pending & allowed
        ))  # fmt: skip
        if fresh:
            scored += _cosine(list(fresh), np.stack(list(fresh.values())), query)
        scored.sort()
        return [key for _, key in scored[:depth]]

    def _pending(self, collection: str, index: VectorIndex | KeywordIndex) -> set[int] | None:
        """The chunks changed since ``index`` was saved (None: it is gone). When a
        writer saved a newer index and emptied the log meanwhile, the newer index is
        taken and the question asked again: never a change missed."""
        for _ in range(5):
            self.db.execute("BEGIN")  # the trim mark and the log from one snapshot
            try:
                row = self.db.execute(
                    "SELECT trimmed FROM index_state WHERE collection = ?", (collection,)
                ).fetchone()
                if row is None or row[0] <= index.seq:
                    return set(self._touched(collection, index.seq))
            finally:
                self.db.commit()
            if not index.refresh():
                return None
        return None

    def _scan(
        self, collection: str, vector: Sequence[float], depth: int, allowed: set[int] | None
    ) -> list[int]:
        """The exact answer: every vector of the collection (or of ``allowed``) compared."""
        restrict = " AND rowid IN (SELECT value FROM json_each(?))" if allowed is not None else ""
        args: tuple[Any, ...] = (_blob(vector), depth)
        if allowed is not None:
            args += (json.dumps(sorted(allowed)),)
        rows = self.db.execute(
            f"SELECT rowid, distance FROM {self._vectors(collection)}"
            f" WHERE embedding MATCH ? AND k = ?{restrict} ORDER BY distance",
            args,
        ).fetchall()
        return [rowid for rowid, _ in rows]

    def _lexical(
        self, collection: str, terms: list[str], depth: int, allowed: set[int] | None = None,
        *, exact: bool = False,
    ) -> list[int]:  # fmt: skip
        """The ids of the ``depth`` chunks that best match any of ``terms`` (BM25), best
        first, among ``allowed`` when it is given: from the collection's top-k index when
        it has one, else (or when ``exact``) from FTS5, which scores every match."""
        index = self._keywords(collection)
        if exact or not index.refresh():
            return [rowid for _, rowid in self._fts(collection, terms, depth, allowed)]
        pending = self._pending(collection, index)
        if pending is None:
            return [rowid for _, rowid in self._fts(collection, terms, depth, allowed)]
        found = [
            (score, rowid)
            for score, rowid in index.search(terms, depth + len(pending), allowed)
            if rowid not in pending
        ]
        if pending:  # what changed since the index's commit: scored by FTS5
            found += self._fts(collection, terms, depth, pending if allowed is None
                               else pending & allowed)  # fmt: skip
            found.sort(key=lambda hit: -hit[0])
        return [rowid for _, rowid in found[:depth]]

    def _fts(
        self, collection: str, terms: list[str], depth: int, allowed: set[int] | None
    ) -> list[tuple[float, int]]:
        """(BM25 score, id) of the ``depth`` best FTS5 matches in the collection."""
        words = " OR ".join(f'"{w}"' for w in terms)
        if allowed is not None:
            rows = self.db.execute(
                "SELECT bm25(chunks_fts), rowid FROM chunks_fts WHERE chunks_fts MATCH ?"
                " AND rowid IN (SELECT value FROM json_each(?)) ORDER BY bm25(chunks_fts) LIMIT ?",
                (words, json.dumps(sorted(allowed)), depth),
            ).fetchall()
        else:  # the matches first, each looked up by key for its collection
            rows = self.db.execute(
                "SELECT bm25(chunks_fts), chunks_fts.rowid FROM chunks_fts"
                " JOIN chunks ON chunks.id = chunks_fts.rowid"
                " WHERE chunks_fts MATCH ? AND chunks.collection = ?"
                " ORDER BY bm25(chunks_fts) LIMIT ?",
                (words, collection, depth),
            ).fetchall()
        return [(-score, rowid) for score, rowid in rows]  # FTS5's bm25() is negated

    def _chunks(self, ids: list[int], collection: str) -> dict[int, tuple[str, str, str]]:
        """(source, heading, text) of the chunks among ``ids`` in ``collection``."""
        rows = self.db.execute(
            # ``+collection``: look the ids up by key, not the collection's every row
            "SELECT id, source, heading, text FROM chunks"
            " WHERE id IN (SELECT value FROM json_each(?)) AND +collection = ?",
            (json.dumps(ids), collection),
        )
        return {row[0]: row[1:] for row in rows}

    def close(self) -> None:
        """Close the file."""
        self.db.close()


class _Collection:
    """A collection of the knowledge base as an ingest's sink."""

    def __init__(self, kb: KnowledgeBase, collection: str) -> None:
        self.kb, self.collection = kb, collection

    def known(self, source: str) -> str | None:
        """The digest the file had when it was last indexed."""
        return self.kb._known(self.collection, source)

    def replace(self, source: str, digest: str, pieces: Sequence[Any],
                vectors: Sequence[Sequence[float]], tags: list[str],
                metadata: dict[str, str]) -> None:  # fmt: skip
        """The file's chunks in place of what it had."""
        self.kb._replace(self.collection, source, digest, pieces, vectors, tags, metadata)

    def forget(self, source: str) -> None:
        """Drop the file."""
        self.kb._forget(self.collection, source)

    def indexed_under(self, folder: str) -> list[str]:
        """The sources indexed from under ``folder``."""
        return self.kb._indexed_under(self.collection, folder)
