"""A namespace of a Pinecone index as a :class:`pilothouse.VectorStore`: dense, or
sparse-dense on a ``dotproduct`` index."""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

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

#: records sent per upsert (Pinecone's limit is 1000 and 2 MB a request), and per text
#: upsert to an index with integrated embedding (its limit is 96)
BATCH, TEXT_BATCH = 100, 96
#: records read per page when listing what a namespace holds
PAGE = 100
#: how much a hybrid query weighs the dense vector against the words (Pinecone's alpha)
ALPHA = 0.5
#: BM25's term-frequency saturation and length normalisation, and the chunk length
#: (in words) it normalises against
K1, B, AVERAGE_WORDS = 1.2, 0.75, 120


class PineconeStore(VectorStore):
    """One namespace of an index; the client made on first use."""

    kind = "pinecone"
    mode = "hybrid"

    def _connect(self) -> Any:
        from pinecone import Pinecone

        s = self.settings
        key = s.api_key.get_secret_value() if s.api_key else ""
        if not key:
            raise VectorStoreError(f"{self.where()}: set api_key (Pinecone Local takes any)")
        return Pinecone(api_key=key).Index(host=s.url)

    def prepare(self, embedder: Embedder, *, create: bool) -> None:
        """Read the index's dimension and metric (the index itself is made in Pinecone)
        and check its vectors are the embedder's."""
        with self._lock, failures(self, "open"):
            if self._client is None:
                self._client = self._connect()
            stats = self._client.describe_index_stats(_request_timeout=self.settings.timeout_s)
        integrated = bool(self.vectorizer)
        self.mode = "hybrid" if stats.get("metric") in (None, "dotproduct") and not integrated \
            else "dense"  # fmt: skip
        made = next(self._metadata({"embedder": {"$exists": True}}, limit=1), {})
        made_by = str(made.get("embedder") or "")
        dimension = stats.get("dimension")
        wrong_size = not integrated and dimension is not None and dimension != embedder.dimension
        if (made_by and made_by != embedder.name) or wrong_size:
            by = f" (made by embedder {made_by!r})" if made_by else ""
            raise VectorStoreError(
                f"{self.where()} holds vectors of {dimension} dimensions{by}; embedder"
                f" {embedder.name!r} makes {embedder.dimension or 'no'}-dimension ones: set"
                f" embedder (or vectorizer) to the one it was built with in"
                f" [plugins.pinecone.stores.{self.name}], or use an index made for this one"
            )

    def query(
        self, vector: list[float], text: str, k: int, filters: Filters | None
    ) -> list[Passage]:
        """The top ``k`` within ``filters``: dense, plus the words on a dotproduct index;
        with integrated embedding, the text (Pinecone embeds it)."""
        if self.vectorizer:
            return self._search_text(text, k, filters)
        extra: dict[str, Any] = {}
        words = sparse(text, query=True) if self.mode == "hybrid" else None
        if words is not None:
            vector = [ALPHA * v for v in vector]
            weighed = [(1 - ALPHA) * v for v in words["values"]]
            extra["sparse_vector"] = {"indices": words["indices"], "values": weighed}
        where = _filter(filters)
        if where:
            extra["filter"] = where
        with failures(self, "search"):
            found = self._client.query(
                vector=vector, top_k=k, namespace=self.settings.collection,
                include_metadata=True, _request_timeout=self.settings.timeout_s, **extra,
            )  # fmt: skip
        return [
            self.passage(match.id, match.score, match.metadata or {}) for match in found.matches
        ]

    def _search_text(self, text: str, k: int, filters: Filters | None) -> list[Passage]:
        query: dict[str, Any] = {"inputs": {"text": text}, "top_k": k}
        where = _filter(filters)
        if where:
            query["filter"] = where
        with failures(self, "search"):
            found = self._client.search(namespace=self.settings.collection, query=query,
                                        fields=["*"])  # fmt: skip
        return [self.passage(hit["_id"], hit["_score"], hit["fields"] or {})
                for hit in found.result.hits]  # fmt: skip

    def digests(self, sources: Sequence[str]) -> dict[str, str]:
        """The digest kept with each source's chunks."""
        if not sources:
            return {}
        return {str(m["source"]): str(m.get("digest", ""))
                for m in self._metadata({"source": {"$in": list(sources)}})}  # fmt: skip

    def sources_under(self, folder: str) -> list[str]:
        """The sources whose path starts with ``folder``."""
        wanted = [{"segments": {"$in": [s]}} for s in source_segments(folder)]
        where = {"$and": wanted} if wanted else {"source": {"$exists": True}}
        return sorted({str(m["source"]) for m in self._metadata(where)
                       if str(m["source"]).startswith(folder)})  # fmt: skip

    def _metadata(self, where: dict[str, Any], limit: int = PAGE) -> Iterator[dict[str, Any]]:
        token = None
        with failures(self, "read"):
            while True:
                page = self._client.fetch_by_metadata(
                    filter=where, namespace=self.settings.collection, limit=limit,
                    pagination_token=token, _request_timeout=self.settings.timeout_s,
                )  # fmt: skip
                for record in page.vectors.values():
                    yield record.metadata or {}
                token = page.pagination.next if page.pagination else None
                if not token:
                    return

    def replace(self, source: str, chunks: Sequence[StoredChunk]) -> None:
        """Delete the source's records, then add its new ones."""
        with failures(self, "write"):
            self._delete(source)
            if self.vectorizer:  # text records: Pinecone embeds their text field
                texts = [{"_id": c.id, **self._record(c)["metadata"],
                          self.settings.text_field: c.text} for c in chunks]  # fmt: skip
                for start in range(0, len(texts), TEXT_BATCH):
                    self._client.upsert_records(self.settings.collection,
                                                texts[start : start + TEXT_BATCH])  # fmt: skip
                return
            records = [self._record(c) for c in chunks]
            for start in range(0, len(records), BATCH):
                self._client.upsert(vectors=records[start : start + BATCH],
                                    namespace=self.settings.collection,
                                    _request_timeout=self.settings.timeout_s)  # fmt: skip

    def _record(self, c: StoredChunk) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": c.id, "values": c.vector,
            "metadata": {**c.metadata, "source": c.source, "text": c.text, "heading": c.heading,
                         "position": c.position, "digest": c.digest, "tags": c.tags,
                         "segments": c.segments, "embedder": self.made_by},
        }  # fmt: skip
        words = sparse(f"{c.heading}\n{c.text}") if self.mode == "hybrid" else None
        if words is not None:
            record["sparse_values"] = words
        return record

    def remove(self, source: str) -> None:
        """Delete the source's records."""
        with failures(self, "write"):
            self._delete(source)

    def _delete(self, source: str) -> None:
        self._client.delete(filter={"source": {"$eq": source}},
                            namespace=self.settings.collection,
                            _request_timeout=self.settings.timeout_s)  # fmt: skip

    def close(self) -> None:
        """Let the client go (it holds a connection pool)."""
        self._client = None


def sparse(text: str, *, query: bool = False) -> dict[str, list[Any]] | None:
    """A text's words as a sparse vector, each word hashed to a 32-bit index; None for a
    text with no words.

    A chunk weighs each word by BM25's saturated term frequency (its length against
    :data:`AVERAGE_WORDS`), so a rare word in a long chunk still counts; a query weighs
    its words alike, at unit length. With no corpus statistics there is no IDF: a word
    every chunk has shifts every score alike."""
    words = re.findall(r"\w+", text.lower())
    counts = Counter(words)
    merged: dict[int, float] = {}
    for word, count in counts.items():
        index = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big")
        if query:
            weight = 1.0
        else:
            length = 1 - B + B * len(words) / AVERAGE_WORDS
            weight = count * (K1 + 1) / (count + K1 * length)
        merged[index] = merged.get(index, 0.0) + weight
    if not merged:
        return None
    if query:
        norm = math.sqrt(sum(v * v for v in merged.values()))
        merged = {i: v / norm for i, v in merged.items()}
    return {"indices": list(merged), "values": list(merged.values())}


def _filter(filters: Filters | None) -> dict[str, Any]:
    """The filters as a Pinecone metadata filter (empty: no filter)."""
    wanted = [{"segments": {"$in": [s]}} for s in wanted_segments(filters)]
    if filters is not None and filters.tag:
        wanted.append({"tags": {"$in": [filters.tag]}})
    wanted += [
        {key: {"$eq": value}} for key, value in (filters.metadata if filters else {}).items()
    ]
    return {"$and": wanted} if wanted else {}
