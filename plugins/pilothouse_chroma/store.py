"""A Chroma collection as a :class:`pilothouse.VectorStore`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pilothouse import (
    Embedder,
    Filters,
    Passage,
    StoredChunk,
    VectorStore,
    VectorStoreError,
    failures,
    source_segments,
    wanted_segments,
)

if TYPE_CHECKING:
    pass


#: how much a chunk holding every word of the query gains over its cosine similarity
WORD_BOOST = 0.3


class ChromaStore(VectorStore):
    """One collection, embedded or on a server; the client made on first use."""

    kind = "chroma"
    mode = "hybrid"
    _collection: Any = None

    def _connect(self) -> Any:
        import chromadb

        s = self.settings
        if s.path:
            return chromadb.PersistentClient(path=s.path)
        parts = urlsplit(s.url or "")
        headers = {"x-chroma-token": s.api_key.get_secret_value()} if s.api_key else None
        from chromadb.config import Settings

        return chromadb.HttpClient(
            host=parts.hostname or "127.0.0.1", port=parts.port or 8000,
            ssl=parts.scheme == "https", headers=headers,
            settings=Settings(chroma_server_http_timeout=s.timeout_s,  # type: ignore[call-arg]
                              anonymized_telemetry=False),
        )  # fmt: skip

    def prepare(self, embedder: Embedder, *, create: bool) -> None:
        """Open the collection (``create``: make it, cosine space, with the embedder's
        name and dimension kept in its metadata) and check its vectors are the
        embedder's."""
        with self._lock, self._failures("open"):
            if self._client is None:
                self._client = self._connect()
            names = {c if isinstance(c, str) else c.name for c in self._client.list_collections()}
            if self.settings.collection not in names:
                if not create:
                    raise VectorStoreError(
                        f"{self.where()}: no such collection; fill it with 'pilothouse ingest"
                        f" --into {self.name} FOLDER'"
                    )
                self._collection = self._client.create_collection(
                    self.settings.collection, embedding_function=None,
                    metadata={"hnsw:space": "cosine", "pilothouse_embedder": embedder.name,
                              "pilothouse_dimension": embedder.dimension},
                )  # fmt: skip
                return
            self._collection = self._client.get_collection(
                self.settings.collection, embedding_function=None
            )
        kept = self._collection.metadata or {}
        dimension = kept.get("pilothouse_dimension")
        if dimension is not None and dimension != embedder.dimension:
            raise VectorStoreError(
                f"{self.where()} holds {dimension}-dimension vectors (embedder"
                f" {kept.get('pilothouse_embedder')!r}); embedder {embedder.name!r} makes"
                f" {embedder.dimension}: set embedder = {kept.get('pilothouse_embedder')!r} in"
                f" [plugins.chroma.stores.{self.name}], or use another collection"
            )

    def query(
        self, vector: list[float], text: str, k: int, filters: Filters | None
    ) -> list[Passage]:
        """Dense candidates, and those holding the query's words (Chroma's full-text
        ``$contains``), both within ``filters``; ranked by cosine similarity plus a
        boost for the share of the query's words each holds."""
        where = _where(filters)
        wanted = max(k * 4, 20)
        words = _words(text)
        with self._failures("search"):
            legs = [
                self._collection.query(
                    query_embeddings=[vector],
                    n_results=wanted,
                    where=where,
                    include=["documents", "metadatas", "distances"],
                )
            ]
            if words:
                contains = [{"$contains": w} for w in words]
                legs.append(self._collection.query(
                    query_embeddings=[vector], n_results=wanted, where=where,
                    where_document=contains[0] if len(contains) == 1 else {"$or": contains},
                    include=["documents", "metadatas", "distances"],
                ))  # fmt: skip
        found: dict[str, Passage] = {}
        for leg in legs:
            for id_, body, meta, distance in zip(leg["ids"][0], leg["documents"][0],
                                                 leg["metadatas"][0], leg["distances"][0],
                                                 strict=True):  # fmt: skip
                if id_ not in found:
                    found[id_] = self._passage(id_, body or "", meta or {}, distance, words)
        return sorted(found.values(), key=lambda p: p.score, reverse=True)[:k]

    def _passage(
        self, id_: str, body: str, meta: dict[str, Any], distance: float, words: list[str]
    ) -> Passage:
        lowered = body.lower()
        share = sum(w.lower() in lowered for w in words) / len(words) if words else 0.0
        return self.passage(id_, (1.0 - float(distance)) + WORD_BOOST * share, meta, text=body)

    def digests(self, sources: Sequence[str]) -> dict[str, str]:
        """The digest kept with each source's chunks."""
        if not sources:
            return {}
        with self._failures("read"):
            got = self._collection.get(where={"source": {"$in": list(sources)}},
                                       include=["metadatas"])  # fmt: skip
        return {str(m["source"]): str(m.get("digest", "")) for m in got["metadatas"] or []}

    def sources_under(self, folder: str) -> list[str]:
        """The sources whose path starts with ``folder``."""
        segments = source_segments(folder)
        with self._failures("read"):
            got = self._collection.get(where=_all_of("segments", segments),
                                       include=["metadatas"])  # fmt: skip
        return sorted({str(m["source"]) for m in got["metadatas"] or []
                       if str(m["source"]).startswith(folder)})  # fmt: skip

    def replace(self, source: str, chunks: Sequence[StoredChunk]) -> None:
        """Delete the source's chunks, then add its new ones."""
        with self._failures("write"):
            self._collection.delete(where={"source": source})
            if chunks:
                self._collection.upsert(
                    ids=[c.id for c in chunks], embeddings=[c.vector for c in chunks],
                    documents=[c.text for c in chunks],
                    metadatas=[_metadata(c) for c in chunks],
                )  # fmt: skip

    def remove(self, source: str) -> None:
        """Delete the source's chunks."""
        with self._failures("write"):
            self._collection.delete(where={"source": source})

    def _failures(self, doing: str) -> Any:
        return failures(self, doing)

    def close(self) -> None:
        """Close the client: its files when embedded, its connections to a server."""
        with self._lock:
            client, self._client, self._collection = self._client, None, None
        if client is not None:
            _close(client)


def _close(client: Any) -> None:
    """Close a chromadb client and, once no other client shares them, the connection
    pools of its HTTP transports (chromadb stops its system but leaves them open)."""
    from chromadb.api.shared_system_client import SharedSystemClient

    parts = [c for c in (client, getattr(client, "_admin_client", None)) if c is not None]
    pools = [(getattr(c, "_identifier", None), getattr(getattr(c, "_server", None), "_session",
                                                       None)) for c in parts]  # fmt: skip
    client.close()
    for identifier, pool in pools:
        if pool is not None and identifier not in SharedSystemClient._identifier_to_system:
            pool.close()


def _metadata(c: StoredChunk) -> dict[str, Any]:
    meta: dict[str, Any] = {**c.metadata, "source": c.source, "heading": c.heading,
                            "position": c.position, "digest": c.digest,
                            "segments": c.segments}  # fmt: skip
    if c.tags:  # Chroma takes no empty array
        meta["tags"] = c.tags
    return meta


def _all_of(key: str, values: Sequence[str]) -> dict[str, Any] | None:
    clauses = [{key: {"$contains": v}} for v in values]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _where(filters: Filters | None) -> dict[str, Any] | None:
    """The filters in Chroma's ``where`` language."""
    clauses = []
    if filters is not None and filters.tag:
        clauses.append({"tags": {"$contains": filters.tag}})
    clauses += [{"segments": {"$contains": s}} for s in wanted_segments(filters)]
    clauses += [
        {key: {"$eq": value}} for key, value in (filters.metadata if filters else {}).items()
    ]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _words(text: str) -> list[str]:
    """The query's words worth matching literally (four letters or more), as written
    and lowercased (Chroma's ``$contains`` minds case)."""
    found = [w for w in re.findall(r"\w{4,}", text)][:12]
    return list(dict.fromkeys([*found, *(w.lower() for w in found)]))
