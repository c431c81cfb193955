"""A Weaviate collection as a :class:`pilothouse.VectorStore`: Weaviate's hybrid search
(BM25 and the embedder's named vector, fused by relative score)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any
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

#: objects sent per batch, and read per page when listing what a collection holds
BATCH = PAGE = 200
#: how much the hybrid search weighs the vector against BM25 (Weaviate's alpha)
ALPHA = 0.5
#: what the collection's description says about its vectors (read back to refuse
#: another embedder's queries)
MADE_BY = re.compile(r"embedder (\S+), (\d+) dimensions")


class WeaviateStore(VectorStore):
    """One collection on a Weaviate server; the client made on first use."""

    kind = "weaviate"
    mode = "hybrid"

    @property
    def _target(self) -> str:
        """The name of the collection's vector."""
        return vector_name(self.made_by)

    @property
    def collection(self) -> str:
        """The class name (Weaviate wants its first letter a capital)."""
        name = self.settings.collection
        return name[:1].upper() + name[1:]

    def _connect(self) -> Any:
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        s = self.settings
        http = urlsplit(s.url)
        secure = http.scheme == "https"
        grpc = urlsplit(f"//{s.grpc_url}") if s.grpc_url else None
        wait = int(max(s.timeout_s, 1))
        return weaviate.connect_to_custom(
            http_host=http.hostname or "127.0.0.1", http_port=http.port or (443 if secure else 80),
            http_secure=secure, grpc_host=(grpc.hostname if grpc else None) or http.hostname
            or "127.0.0.1", grpc_port=(grpc.port if grpc else None) or 50051, grpc_secure=secure,
            auth_credentials=Auth.api_key(s.api_key.get_secret_value()) if s.api_key else None,
            additional_config=AdditionalConfig(timeout=Timeout(init=wait, query=wait,
                                                               insert=wait)),
            # the client's own start-up checks ask pypi.org for its latest version at
            # every connect: nothing leaves for the internet from here (the server's
            # /meta is still read, a wrong key or a server that is down still named)
            skip_init_checks=True,
        )  # fmt: skip

    def prepare(self, embedder: Embedder, *, create: bool) -> None:
        """Open the collection (``create``: make it, a vector named after the embedder and
        the chunk's properties) and check it was made for this embedder."""
        from weaviate.classes.config import DataType, Property, Tokenization

        with self._lock, failures(self, "open"):
            if self._client is None:
                self._client = self._connect()
            client = self._client
            if not client.collections.exists(self.collection):
                if not create:
                    raise VectorStoreError(
                        f"{self.where()}: no such collection; fill it with 'pilothouse ingest"
                        f" --into {self.name} FOLDER'"
                    )
                field, word = Tokenization.FIELD, Tokenization.WORD
                client.collections.create(
                    self.collection,
                    description=(f"pilothouse chunks; embedder {embedder.name},"
                                 f" {embedder.dimension} dimensions"),
                    vector_config=self._vectors(embedder),
                    properties=[
                        Property(name="text", data_type=DataType.TEXT, tokenization=word),
                        Property(name="heading", data_type=DataType.TEXT, tokenization=word),
                        Property(name="source", data_type=DataType.TEXT, tokenization=field),
                        Property(name="digest", data_type=DataType.TEXT, tokenization=field),
                        Property(name="position", data_type=DataType.INT),
                        Property(name="tags", data_type=DataType.TEXT_ARRAY, tokenization=field),
                        Property(name="segments", data_type=DataType.TEXT_ARRAY,
                                 tokenization=field),
                    ],
                )  # fmt: skip
            config = client.collections.use(self.collection).config.get(simple=True)
            described = config.description or ""
        made = MADE_BY.search(described)
        if made and (made.group(1), int(made.group(2))) != (embedder.name, embedder.dimension):
            raise VectorStoreError(
                f"{self.where()} holds vectors of embedder {made.group(1)!r} ({made.group(2)}"
                f" dimensions); embedder {embedder.name!r} makes {embedder.dimension}-dimension"
                f" ones: set embedder to {made.group(1)!r} in [plugins.weaviate.stores."
                f"{self.name}], or use another collection"
            )

    def _vectors(self, embedder: Embedder) -> Any:
        """The collection's named vector: the embedder's, or the vectorizer module's
        (over heading and text)."""
        from weaviate.classes.config import Configure

        if self.vectorizer:
            return Configure.Vectors.custom(
                name=vector_name(embedder.name), module_name=self.vectorizer,
                module_config=self.settings.vectorizer_config or None,
                source_properties=["heading", "text"],
            )  # fmt: skip
        return Configure.Vectors.self_provided(name=vector_name(embedder.name))

    def _use(self) -> Any:
        return self._client.collections.use(self.collection)

    def query(
        self, vector: list[float], text: str, k: int, filters: Filters | None
    ) -> list[Passage]:
        """Hybrid: BM25 over text and heading with the vector, within ``filters``."""
        from weaviate.classes.query import HybridFusion, MetadataQuery

        with failures(self, "search"):
            found = self._use().query.hybrid(
                query=text, vector=vector or None, target_vector=self._target, alpha=ALPHA,
                limit=k,
                query_properties=["text", "heading"], fusion_type=HybridFusion.RELATIVE_SCORE,
                filters=_filter(filters),
                return_metadata=MetadataQuery(score=True),
            )  # fmt: skip
        return [self.passage(o.uuid, o.metadata.score or 0.0, o.properties) for o in found.objects]

    def digests(self, sources: Sequence[str]) -> dict[str, str]:
        """The digest kept with each source's chunks."""
        from weaviate.classes.query import Filter

        if not sources:
            return {}
        where = Filter.by_property("source").contains_any(list(sources))
        return {str(p["source"]): str(p.get("digest", ""))
                for p in self._properties(where, ["source", "digest"])}  # fmt: skip

    def sources_under(self, folder: str) -> list[str]:
        """The sources whose path starts with ``folder``."""
        from weaviate.classes.query import Filter

        segments = source_segments(folder)
        where = Filter.by_property("segments").contains_all(segments) if segments else None
        return sorted({str(p["source"]) for p in self._properties(where, ["source"])
                       if str(p["source"]).startswith(folder)})  # fmt: skip

    def _properties(self, where: Any, fields: list[str]) -> Iterator[dict[str, Any]]:
        offset = 0
        with failures(self, "read"):
            while True:
                page = self._use().query.fetch_objects(filters=where, limit=PAGE, offset=offset,
                                                       return_properties=fields)  # fmt: skip
                for found in page.objects:
                    yield dict(found.properties)
                if len(page.objects) < PAGE:
                    return
                offset += PAGE

    def replace(self, source: str, chunks: Sequence[StoredChunk]) -> None:
        """Delete the source's objects, then add its new ones."""
        from weaviate.classes.data import DataObject

        with failures(self, "write"):
            self._delete(source)
            objects = [
                DataObject(uuid=c.id, vector={self._target: c.vector} if c.vector else None,
                           properties={
                    **c.metadata, "text": c.text, "heading": c.heading, "source": c.source,
                    "digest": c.digest, "position": c.position, "tags": c.tags,
                    "segments": c.segments})
                for c in chunks
            ]  # fmt: skip
            for start in range(0, len(objects), BATCH):
                done = self._use().data.insert_many(objects[start : start + BATCH])
                if done.errors:
                    first = next(iter(done.errors.values()))
                    raise VectorStoreError(f"{self.where()}: cannot write {source}:"
                                           f" {first.message}")  # fmt: skip

    def remove(self, source: str) -> None:
        """Delete the source's objects."""
        with failures(self, "write"):
            self._delete(source)

    def _delete(self, source: str) -> None:
        from weaviate.classes.query import Filter

        self._use().data.delete_many(where=Filter.by_property("source").equal(source))

    def close(self) -> None:
        """Close the client (its HTTP pool and gRPC channel)."""
        if self._client is not None:
            self._client.close()
            self._client = None


def vector_name(embedder: str) -> str:
    """A vector's name in Weaviate (letters, digits, underscores) for an embedder's."""
    return re.sub(r"\W", "_", embedder)


def _filter(filters: Filters | None) -> Any:
    """The filters as a Weaviate filter (None: no filter)."""
    from weaviate.classes.query import Filter

    wanted = []
    segments = wanted_segments(filters)
    if segments:
        wanted.append(Filter.by_property("segments").contains_all(segments))
    if filters is not None and filters.tag:
        wanted.append(Filter.by_property("tags").contains_any([filters.tag]))
    wanted += [Filter.by_property(key).equal(value)
               for key, value in (filters.metadata if filters else {}).items()]  # fmt: skip
    return Filter.all_of(wanted) if len(wanted) > 1 else (wanted[0] if wanted else None)
