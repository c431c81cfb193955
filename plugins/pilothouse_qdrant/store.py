"""A Qdrant collection as a :class:`pilothouse.VectorStore`: dense and sparse vectors,
fused by Qdrant."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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

#: the sparse vector of a chunk's words
WORDS = "words"
#: points read per page when listing what a collection holds
PAGE = 1000


class QdrantStore(VectorStore):
    """One collection, in local mode or on a server; the client made on first use."""

    kind = "qdrant"
    mode = "hybrid"

    def _connect(self) -> Any:
        from qdrant_client import QdrantClient

        s = self.settings
        if s.path:
            return QdrantClient(path=s.path)
        key = s.api_key.get_secret_value() if s.api_key else None
        # no version check: it is a thread of its own whose failure says nothing useful
        return QdrantClient(url=s.url, api_key=key, timeout=int(max(s.timeout_s, 1)),
                            check_compatibility=False)  # fmt: skip

    def prepare(self, embedder: Embedder, *, create: bool) -> None:
        """Open the collection (``create``: make it, a dense vector named after the
        embedder and a sparse one of words with IDF) and check its dense vector is the
        embedder's."""
        from qdrant_client import models

        with self._lock, failures(self, "open"):
            if self._client is None:
                self._client = self._connect()
            if not self._client.collection_exists(self.settings.collection):
                if not create:
                    raise VectorStoreError(
                        f"{self.where()}: no such collection; fill it with 'pilothouse ingest"
                        f" --into {self.name} FOLDER'"
                    )
                self._client.create_collection(
                    self.settings.collection,
                    vectors_config={embedder.name: models.VectorParams(
                        size=embedder.dimension, distance=models.Distance.COSINE)},
                    sparse_vectors_config={WORDS: models.SparseVectorParams(
                        modifier=models.Modifier.IDF)},
                )  # fmt: skip
                for field in ("source", "tags", "segments") if self.settings.url else ():
                    # a server filters by indexed fields (local mode has no indexes)
                    self._client.create_payload_index(
                        self.settings.collection, field, models.PayloadSchemaType.KEYWORD
                    )
            vectors = self._client.get_collection(self.settings.collection).config.params.vectors
        kept = vectors if isinstance(vectors, dict) else {"": vectors}
        mine = kept.get(embedder.name)
        if mine is None or mine.size != embedder.dimension:
            held = ", ".join(f"{n or 'unnamed'} ({v.size} dimensions)" for n, v in kept.items())
            raise VectorStoreError(
                f"{self.where()} holds vectors of {held}; embedder {embedder.name!r} makes"
                f" {embedder.dimension}-dimension ones: set embedder to the one it was built"
                f" with in [plugins.qdrant.stores.{self.name}], or use another collection"
            )

    def query(
        self, vector: list[float], text: str, k: int, filters: Filters | None
    ) -> list[Passage]:
        """Dense and sparse candidates within ``filters``, fused by reciprocal rank."""
        from qdrant_client import models

        where = _filter(filters)
        wanted = max(k * 4, 20)
        legs = [models.Prefetch(query=vector, using=self.embedder, limit=wanted, filter=where)]
        words = sparse(text)
        if words.indices:
            legs.append(models.Prefetch(query=words, using=WORDS, limit=wanted, filter=where))
        with failures(self, "search"):
            found = self._client.query_points(
                self.settings.collection, prefetch=legs,
                query=models.FusionQuery(fusion=models.Fusion.RRF), limit=k,
                query_filter=where, with_payload=True,
            )  # fmt: skip
        return [self.passage(point.id, point.score, point.payload or {}) for point in found.points]

    def digests(self, sources: Sequence[str]) -> dict[str, str]:
        """The digest kept with each source's chunks."""
        from qdrant_client import models

        if not sources:
            return {}
        condition = models.FieldCondition(key="source", match=models.MatchAny(any=list(sources)))
        found = self._scroll(models.Filter(must=[condition]), ["source", "digest"])
        return {str(p["source"]): str(p.get("digest", "")) for p in found}

    def sources_under(self, folder: str) -> list[str]:
        """The sources whose path starts with ``folder``."""
        where = _filter(Filters(source=folder)) if source_segments(folder) else None
        return sorted({str(p["source"]) for p in self._scroll(where, ["source"])
                       if str(p["source"]).startswith(folder)})  # fmt: skip

    def _scroll(self, where: Any, fields: list[str]) -> list[dict[str, Any]]:
        payloads: list[dict[str, Any]] = []
        offset = None
        with failures(self, "read"):
            while True:
                points, offset = self._client.scroll(
                    self.settings.collection, scroll_filter=where, with_payload=fields,
                    limit=PAGE, offset=offset,
                )  # fmt: skip
                payloads += [p.payload or {} for p in points]
                if offset is None:
                    return payloads

    def replace(self, source: str, chunks: Sequence[StoredChunk]) -> None:
        """Delete the source's points, then add its new ones."""
        from qdrant_client import models

        with failures(self, "write"):
            self._delete(source)
            if chunks:
                self._client.upsert(self.settings.collection, points=[
                    models.PointStruct(
                        id=c.id,
                        vector={self.embedder: c.vector, WORDS: sparse(f"{c.heading}\n{c.text}")},
                        payload={**c.metadata, "source": c.source, "text": c.text,
                                 "heading": c.heading,
                                 "position": c.position, "digest": c.digest, "tags": c.tags,
                                 "segments": c.segments},
                    )
                    for c in chunks
                ])  # fmt: skip

    def remove(self, source: str) -> None:
        """Delete the source's points."""
        with failures(self, "write"):
            self._delete(source)

    def _delete(self, source: str) -> None:
        from qdrant_client import models

        condition = models.FieldCondition(key="source", match=models.MatchValue(value=source))
        self._client.delete(self.settings.collection,
                            points_selector=models.FilterSelector(
                                filter=models.Filter(must=[condition])))  # fmt: skip

    def close(self) -> None:
        """Close the client (local mode holds a lock on its folder)."""
        if self._client is not None:
            self._client.close()
            self._client = None


def sparse(text: str) -> Any:
    """A text's words as a sparse vector: each word hashed to an index, its count as the
    value (Qdrant weighs by IDF at query time)."""
    from qdrant_client import models

    counts = Counter(re.findall(r"\w+", text.lower()))
    indices = [int.from_bytes(hashlib.sha256(w.encode()).digest()[:4], "big") for w in counts]
    merged: dict[int, float] = {}
    for index, count in zip(indices, counts.values(), strict=True):
        merged[index] = merged.get(index, 0.0) + float(count)
    return models.SparseVector(indices=list(merged), values=list(merged.values()))


def _filter(filters: Filters | None) -> Any:
    """The filters as Qdrant payload conditions (None: no filter)."""
    from qdrant_client import models

    must = []
    if filters is not None and filters.tag:
        must.append(models.FieldCondition(key="tags", match=models.MatchValue(value=filters.tag)))
    must += [models.FieldCondition(key="segments", match=models.MatchValue(value=s))
             for s in wanted_segments(filters)]  # fmt: skip
    must += [models.FieldCondition(key=key, match=models.MatchValue(value=value))
             for key, value in (filters.metadata if filters else {}).items()]  # fmt: skip
    return models.Filter(must=must) if must else None
