"""A Milvus collection as a :class:`pilothouse.VectorStore`: a dense vector and
Milvus's BM25 function over the text, fused by Milvus."""

from __future__ import annotations

import json
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

#: what a search reads back: the chunk and its provenance, and its metadata (dynamic fields)
FIELDS = ["text", "source", "heading", "position", "tags", "$meta"]
#: the collection property naming the embedder that made its vectors
EMBEDDER_PROPERTY = "pilothouse.embedder"
#: rows read per query when listing what a collection holds
PAGE = 1000


class MilvusStore(VectorStore):
    """One collection, in Milvus Lite or on a server; the client made on first use."""

    kind = "milvus"
    mode = "hybrid"

    def prepare(self, embedder: Embedder, *, create: bool) -> None:
        """Open the collection (``create``: make it: text with an analyzer, the BM25
        function making its sparse vector, the dense vector, the embedder's name as a
        collection property) and check its dense vector is the embedder's."""
        from pymilvus import MilvusClient

        s = self.settings
        with self._lock, failures(self, "open"):
            if self._client is None:
                token = s.token.get_secret_value() if s.token else ""
                self._client = MilvusClient(s.uri, token=token, timeout=s.timeout_s)
            if not self._client.has_collection(s.collection):
                if not create:
                    raise VectorStoreError(
                        f"{self.where()}: no such collection; fill it with 'pilothouse ingest"
                        f" --into {self.name} FOLDER'"
                    )
                self._create(embedder)
                return
            described = self._client.describe_collection(s.collection)
        dense = next((f for f in described["fields"] if f["name"] == "dense"), None)
        size = int((dense or {}).get("params", {}).get("dim", 0))
        made_by = (described.get("properties") or {}).get(EMBEDDER_PROPERTY, "unknown")
        if size != embedder.dimension:
            raise VectorStoreError(
                f"{self.where()} holds {size}-dimension vectors (embedder {made_by!r});"
                f" embedder {embedder.name!r} makes {embedder.dimension}: set embedder ="
                f" {made_by!r} in [plugins.milvus.stores.{self.name}], or use another"
                " collection"
            )

    def _create(self, embedder: Embedder) -> None:
        from pymilvus import DataType, Function, FunctionType

        client = self._client
        # dynamic fields: a chunk's metadata keys (ingest --meta), filterable by name
        schema = client.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("text", DataType.VARCHAR, max_length=65535, enable_analyzer=True)
        schema.add_field("source", DataType.VARCHAR, max_length=4096)
        schema.add_field("heading", DataType.VARCHAR, max_length=4096)
        schema.add_field("position", DataType.INT64)
        schema.add_field("digest", DataType.VARCHAR, max_length=128)
        for array in ("tags", "segments"):
            schema.add_field(array, DataType.ARRAY, element_type=DataType.VARCHAR,
                             max_capacity=256, max_length=1024)  # fmt: skip
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=embedder.dimension)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function(name="bm25", function_type=FunctionType.BM25,
                                     input_field_names=["text"],
                                     output_field_names=["sparse"]))  # fmt: skip
        index = client.prepare_index_params()
        index.add_index("dense", index_type="AUTOINDEX", metric_type="COSINE")
        index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        client.create_collection(self.settings.collection, schema=schema, index_params=index,
                                 properties={EMBEDDER_PROPERTY: embedder.name})  # fmt: skip

    def query(
        self, vector: list[float], text: str, k: int, filters: Filters | None
    ) -> list[Passage]:
        """Dense and BM25 candidates within ``filters``, fused by Milvus's RRF."""
        from pymilvus import AnnSearchRequest, RRFRanker

        expr = _expression(filters)
        wanted = max(k * 4, 20)
        legs = [AnnSearchRequest([vector], "dense", {"metric_type": "COSINE"}, limit=wanted,
                                 expr=expr)]  # fmt: skip
        if text.strip():
            legs.append(AnnSearchRequest([text], "sparse", {"metric_type": "BM25"},
                                         limit=wanted, expr=expr))  # fmt: skip
        with failures(self, "search"):
            found = self._client.hybrid_search(self.settings.collection, legs, RRFRanker(),
                                               limit=k, output_fields=FIELDS)  # fmt: skip
        return [self.passage(hit["id"], hit["distance"], hit["entity"]) for hit in found[0]]

    def digests(self, sources: Sequence[str]) -> dict[str, str]:
        """The digest kept with each source's chunks."""
        if not sources:
            return {}
        rows = self._rows(f"source in {json.dumps(list(sources))}", ["source", "digest"])
        return {str(r["source"]): str(r["digest"]) for r in rows}

    def sources_under(self, folder: str) -> list[str]:
        """The sources whose path starts with ``folder``."""
        segments = source_segments(folder)
        expr = _all_of("segments", segments) or "position >= 0"
        return sorted({str(r["source"]) for r in self._rows(expr, ["source"])
                       if str(r["source"]).startswith(folder)})  # fmt: skip

    def _rows(self, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        with failures(self, "read"):
            while True:
                page = self._client.query(self.settings.collection, filter=expr,
                                          output_fields=fields, limit=PAGE,
                                          offset=len(rows))  # fmt: skip
                rows += page
                if len(page) < PAGE:
                    return rows

    def replace(self, source: str, chunks: Sequence[StoredChunk]) -> None:
        """Delete the source's rows, then add its new ones (Milvus makes their BM25
        vectors from the text)."""
        with failures(self, "write"):
            self._delete(source)
            if chunks:
                self._client.insert(self.settings.collection, [
                    {**c.metadata, "id": c.id, "text": c.text, "source": c.source,
                     "heading": c.heading,
                     "position": c.position, "digest": c.digest, "tags": c.tags,
                     "segments": c.segments, "dense": c.vector}
                    for c in chunks
                ])  # fmt: skip

    def remove(self, source: str) -> None:
        """Delete the source's rows."""
        with failures(self, "write"):
            self._delete(source)

    def _delete(self, source: str) -> None:
        self._client.delete(self.settings.collection, filter=f"source == {json.dumps(source)}")

    def close(self) -> None:
        """Close the client (Milvus Lite holds its file while open)."""
        if self._client is not None:
            self._client.close()
            self._client = None


def _all_of(field: str, values: Sequence[str]) -> str:
    return " and ".join(f"array_contains({field}, {json.dumps(v)})" for v in values)


def _expression(filters: Filters | None) -> str:
    """The filters as a Milvus boolean expression ("" for none)."""
    parts = []
    if filters is not None and filters.tag:
        parts.append(_all_of("tags", [filters.tag]))
    if segments := wanted_segments(filters):
        parts.append(_all_of("segments", segments))
    parts += [f"{key} == {json.dumps(value)}"
              for key, value in (filters.metadata if filters else {}).items()]  # fmt: skip
    return " and ".join(parts)
