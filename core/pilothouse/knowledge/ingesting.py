"""Ingesting files, wherever their chunks go: the workspace's knowledge base or an
external vector store. The same reading, chunking, embedding and bookkeeping either
way: a file whose content hash (chunker version included) is unchanged is skipped, a
changed one has its chunks replaced, one gone from an ingested folder is dropped."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..embedding import Embedder
from ..retrieval import METADATA_KEY, RESERVED_KEYS
from ..vectorstores import StoredChunk, StoreRetriever, VectorStore, chunk_id, failures
from .chunking import CHUNKING, Chunk, chunk
from .reading import SUFFIXES, KnowledgeError, NotText, text_of


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
    #: what became of the collection's derived indexes (vectors, keywords)
    index: str = ""


class Sink(Protocol):
    """Where an ingest's chunks go."""

    def known(self, source: str) -> str | None:
        """The digest ``source`` had when it was last ingested."""

    def replace(self, source: str, digest: str, pieces: Sequence[Chunk],
                vectors: Sequence[Sequence[float]], tags: list[str],
                metadata: dict[str, str]) -> None:  # fmt: skip
        """The file's chunks in place of what it had."""

    def forget(self, source: str) -> None:
        """Drop the file."""

    def indexed_under(self, folder: str) -> list[str]:
        """The sources ingested from under ``folder`` (ending in a slash)."""


def ingest_files(
    paths: Iterable[str | Path],
    sink: Sink,
    embedder: Embedder,
    *,
    tags: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
    batch: int = 32,
) -> IngestReport:
    """Index new and changed files under ``paths`` into ``sink``; drop files that
    disappeared from an ingested folder. Every chunk carries ``tags`` and ``metadata``
    (what ``Filters`` select on); a file ingested again with other ones is rewritten."""
    kept = checked_metadata(metadata or {})
    # the labels are part of the digest (only when there are some: a file ingested
    # without any keeps the digest it always had)
    labels = json.dumps([sorted(set(tags)), kept], sort_keys=True) if tags or kept else ""
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
                sink.forget(source)  # it will not become text by itself: nothing to keep
                continue
            except KnowledgeError as exc:
                report.failed.append(str(exc))
                seen.discard(source)  # keep what an earlier ingest had of it
                continue
            # the chunker's version is part of the digest: a new cut re-indexes
            digest = hashlib.sha256(f"{CHUNKING}\n{labels}{text}".encode()).hexdigest()
            if sink.known(source) == digest:
                report.unchanged += 1
                continue
            pieces = chunk(text)
            vectors: list[list[float]] = []
            for start in range(0, len(pieces), batch):
                part = pieces[start : start + batch]
                vectors += embedder.embed([f"{c.heading}\n{c.text}" for c in part])
            sink.replace(source, digest, pieces, vectors, list(tags), kept)
            report.updated += 1
            report.chunks += len(pieces)
    for folder in folders:
        unreadable = {f.split(": ", 1)[0] for f in report.failed}
        for source in sink.indexed_under(folder.rstrip("/") + "/"):
            if source not in seen and not any(source in u for u in unreadable):
                sink.forget(source)
                report.removed += 1
    return report


class StoreSink:
    """An external vector store as an ingest's sink."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store

    def known(self, source: str) -> str | None:
        """The digest the store keeps with the file's chunks."""
        with failures(self.store, "read"):
            return self.store.digests([source]).get(source)

    def replace(self, source: str, digest: str, pieces: Sequence[Chunk],
                vectors: Sequence[Sequence[float]], tags: list[str],
                metadata: dict[str, str]) -> None:  # fmt: skip
        """The file's chunks, with their provenance, in place of what it had."""
        chunks = [
            StoredChunk(id=chunk_id(source, piece.position), source=source, text=piece.text,
                        heading=piece.heading, position=piece.position,
                        tags=list(dict.fromkeys(tags)), metadata=dict(metadata), digest=digest,
                        vector=list(vector))
            for piece, vector in zip(pieces, vectors, strict=True)
        ]  # fmt: skip
        with failures(self.store, "write"):
            self.store.replace(source, chunks)

    def forget(self, source: str) -> None:
        """Drop the file's chunks."""
        with failures(self.store, "write"):
            self.store.remove(source)

    def indexed_under(self, folder: str) -> list[str]:
        """The sources the store holds from under ``folder``."""
        with failures(self.store, "read"):
            return self.store.sources_under(folder)


def ingest_into(
    retriever: StoreRetriever,
    paths: Iterable[str | Path],
    *,
    tags: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> IngestReport:
    """``pilothouse ingest --into NAME``: files into a registered store's collection
    (made when missing, checked against the store's embedder when not)."""
    checked_metadata(metadata or {})  # before anything is written
    embedder = retriever.ready(create=True)
    return ingest_files(paths, StoreSink(retriever.store), embedder, tags=tags,
                        metadata=metadata, progress=progress)  # fmt: skip


def checked_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """``metadata`` as chunks carry it, or a :class:`KnowledgeError` naming a key no
    store can filter on (or one a store keeps for itself)."""
    for key in metadata:
        if not METADATA_KEY.fullmatch(key):
            raise KnowledgeError(f"metadata key {key!r}: use letters, digits and underscores")
        if key in RESERVED_KEYS:
            raise KnowledgeError(f"metadata key {key!r} is kept by every store itself: use"
                                 " another name")  # fmt: skip
    return {key: str(value) for key, value in sorted(metadata.items())}
