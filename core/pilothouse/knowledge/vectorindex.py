"""An approximate nearest-neighbour index (HNSW, ``usearch``) of one collection's vectors.

The knowledge base's SQLite file stays the source of truth: this index is derived
from it, and can always be thrown away and rebuilt (``pilothouse ingest --reindex``).
It lives in a folder beside the database, one file per saved generation:
``<table>.<seq>.usearch``, where ``seq`` is the last entry of the knowledge base's
change log the file includes. A file is written under a temporary name and renamed
into place, so a reader sees either the old generation or the new one, whole; a
reader that has the old one memory-mapped keeps reading it after the rename.

Vectors are kept as float16 (half the memory of float32; on MiniLM vectors the
top-10 is the same as float32's, see ``bench/bench_knowledge.py``). Keys are the
chunks' row ids.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError

#: HNSW graph degree and the beam widths at build and query time. Measured on MiniLM
#: vectors mixed to 1M (bench/knowledge_corpus.py, 200 held-out queries): query beam
#: 96 -> recall@10 0.919 (0.83 ms), 160 -> 0.941, 256 -> 0.958 (1.51 ms), 400 -> 0.968;
#: the whole search at 256 measured 0.951 once, too close to 0.95 to keep
CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 400
#: the first nodes of a graph are inserted one thread at a time: two threads inserting
#: into a small graph race, and each lost back-link can leave a node no search reaches
#: (120 MiniLM vectors, 2 threads: 0.4 of 120 unreachable on average, up to 3; one
#: thread for the first 1000 and two for the rest of 2,000 or 10,000: as one thread)
SERIAL_UP_TO = 2048


def _usearch() -> Any:
    try:
        from usearch import index
    except ImportError as exc:
        raise ConfigError(
            "the knowledge base's vector index needs usearch: pip install 'pilothouse[knowledge]'"
        ) from exc
    return index


class VectorIndex:
    """The saved generations of one collection's index, and the one in use."""

    def __init__(self, folder: Path, table: str, dimension: int) -> None:
        self.folder = folder
        self.table = table
        self.dimension = dimension
        #: the change-log entry the index in use includes (-1: none in use)
        self.seq = -1
        self._index: Any = None
        self._writable = False
        self._pattern = re.compile(re.escape(table) + r"\.(\d+)\.usearch")
        self._leftover = re.compile(re.escape(table) + r"\.\d+\.tmp")

    def newest(self) -> tuple[int, Path] | None:
        """The newest saved generation: (its change-log seq, its file), or None."""
        best: tuple[int, Path] | None = None
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return None
        for name in names:
            match = self._pattern.fullmatch(name)
            if match and (best is None or int(match[1]) > best[0]):
                best = (int(match[1]), self.folder / name)
        return best

    def exists(self) -> bool:
        """Whether a generation was ever saved."""
        return self.newest() is not None

    def refresh(self) -> bool:
        """Use the newest saved generation (memory-mapped, read-only) if it is newer than
        the one in use; False when none was ever saved."""
        newest = self.newest()
        if newest is None:
            return False
        seq, path = newest
        if seq != self.seq or self._index is None:
            index = _usearch().Index(ndim=self.dimension, metric="cos", dtype="f16")
            try:
                index.view(str(path))
            except (FileNotFoundError, RuntimeError):
                # a writer replaced it between the listing and the open: take the new one
                return self.refresh()
            index.expansion_search = EXPANSION_SEARCH
            self._index, self.seq, self._writable = index, seq, False
        return True

    def __len__(self) -> int:
        return 0 if self._index is None else len(self._index)

    def search(self, vector: Any, count: int) -> list[tuple[int, float]]:
        """Up to ``count`` (key, cosine distance) pairs, nearest first."""
        if self._index is None or not len(self._index):
            return []
        found = self._index.search(vector, min(count, len(self._index)))
        return list(zip(found.keys.tolist(), found.distances.tolist(), strict=True))

    def vectors(self, keys: list[int]) -> Any:
        """The stored vectors of ``keys`` (a row of NaN for a key the index lacks)."""
        import numpy as np

        out = np.full((len(keys), self.dimension), np.nan, dtype=np.float32)
        if self._index is None or not keys:
            return out
        got = self._index.get(np.asarray(keys, dtype=np.uint64), dtype="f32")
        for row, vector in enumerate(got):
            if vector is not None:
                out[row] = vector
        return out

    # -- writing -------------------------------------------------------------------

    def _writable_copy(self, *, empty: bool = False) -> Any:
        """The index in memory, to change: the newest generation loaded (a memory-mapped
        one is read-only), or an empty one."""
        if empty or self._index is None or not self._writable:
            index = _usearch().Index(
                ndim=self.dimension, metric="cos", dtype="f16", connectivity=CONNECTIVITY,
                expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH,
            )  # fmt: skip
            newest = None if empty else self.newest()
            if newest is not None:
                index.load(str(newest[1]))
                self.seq = newest[0]
            self._index, self._writable = index, True
        return self._index

    def reset(self) -> None:
        """Start from an empty index (a rebuild): nothing saved changes until :meth:`save`."""
        self._writable_copy(empty=True)

    def update(self, added: Iterable[tuple[Any, Any]], removed: list[int]) -> None:
        """Apply changes: ``removed`` keys out, then each (keys, vectors) batch of
        ``added`` in (a key already present is replaced)."""
        import numpy as np

        index = self._writable_copy()
        for key in removed:
            if index.contains(key):
                index.remove(key)
        for keys, vectors in added:
            keys = np.asarray(keys, dtype=np.uint64)
            present = [k for k in keys.tolist() if index.contains(k)]
            for key in present:
                index.remove(key)
            vectors = np.asarray(vectors, dtype=np.float32)
            serial = max(0, min(len(keys), SERIAL_UP_TO - len(index)))
            if serial:
                index.add(keys[:serial], vectors[:serial], threads=1)
            if len(keys) > serial:
                index.add(keys[serial:], vectors[serial:], threads=os.cpu_count() or 1)

    def save(self, seq: int) -> Path:
        """Write the index as generation ``seq`` and drop the older generations (and
        this one, when another writer saved a newer one meanwhile)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.table}.{seq}.usearch"
        temporary = path.with_suffix(".tmp")
        self._writable_copy().save(str(temporary))
        with open(temporary, "rb") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
        self.seq = seq
        newest = self.newest()
        for name in os.listdir(self.folder):
            match = self._pattern.fullmatch(name)
            if match and newest and int(match[1]) < newest[0]:
                (self.folder / name).unlink(missing_ok=True)
        return path

    def drop(self) -> None:
        """Delete every saved generation (the collection went below the size that
        needs an index, or is rebuilt from nothing)."""
        self._index, self._writable, self.seq = None, False, -1
        for name in os.listdir(self.folder) if self.folder.exists() else []:
            if self._pattern.fullmatch(name) or self._leftover.fullmatch(name):
                (self.folder / name).unlink(missing_ok=True)
