"""Knowledge where it already lives: a collection in an external vector database
(Chroma, Qdrant, Milvus, Pinecone, Weaviate...) as a retriever.

A plugin registers a :class:`VectorStore` per configured name (``register_stores``);
the core makes it the retriever of that name, whose queries are embedded by the
store's ``embedder`` (a registered one: the same vectors ``pilothouse ingest --into
NAME`` wrote), and ingests folders into it with the knowledge base's own chunking and
provenance. A store's methods block (the vendors' clients are synchronous): the core
calls them in a worker thread.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator

from .blocking import run_blocking
from .embedding import Embedder
from .errors import NotFound, PilothouseError
from .retrieval import RESERVED_KEYS, Filters, Passage, Retriever


class VectorStoreError(PilothouseError):
    """A vector store cannot do what was asked: the message names the store, where it is
    (never a secret) and what to do."""

    kind = "vector_store"


class StoredChunk(BaseModel):
    """A chunk as an external store keeps it: text, provenance and vector."""

    #: stable for a source and position (re-ingesting a file replaces its chunks)
    id: str
    source: str
    text: str
    heading: str = ""
    position: int = 0
    tags: list[str] = Field(default_factory=list)
    #: what the file was ingested with (``--meta KEY=VALUE``): what metadata filters select
    metadata: dict[str, str] = Field(default_factory=dict)
    #: the digest of the whole file (its chunker's version included): unchanged files
    #: are skipped
    digest: str = ""
    vector: list[float] = Field(default_factory=list)

    @property
    def segments(self) -> list[str]:
        """The source's path segments (what a ``source`` filter matches)."""
        return source_segments(self.source)


def chunk_id(source: str, position: int) -> str:
    """A chunk's id: a UUID-shaped digest of its source and position (every store
    takes a UUID)."""
    digest = hashlib.sha256(f"{source}\n{position}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def source_segments(source: str) -> list[str]:
    """``/srv/docs/research/market.md`` -> ``["srv", "docs", "research", "market.md"]``."""
    return [part for part in source.replace("\\", "/").split("/") if part]


def wanted_segments(filters: Filters | None) -> list[str]:
    """The path segments a ``source`` filter asks for: in an external store it matches
    whole segments (``research/`` or ``research/market.md``), pushed down to the store
    as a filter on an array of segments."""
    return source_segments(filters.source) if filters and filters.source else []


def bare_url(url: str) -> str:
    """A URL without its user and password (what messages may show)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        parts = parts._replace(netloc=host + port)
    return parts.geturl()


@contextlib.contextmanager
def failures(store: VectorStore, doing: str) -> Iterator[None]:
    """A vendor client's errors as one :class:`VectorStoreError` naming the store, what
    it was doing, the client's words and what to do about them."""
    try:
        yield
    except VectorStoreError:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise VectorStoreError(
            f"{store.where()}: cannot {doing}: {detail} ({_hint(detail, exc, store.kind)})"
        ) from None


def _hint(detail: str, exc: Exception, kind: str = "") -> str:
    if isinstance(exc, ModuleNotFoundError):
        return f"its client is not installed: pip install 'pilothouse[{kind}]'"
    lowered = detail.lower()
    if "insecure" in lowered:
        return "the key would travel unencrypted: use an https url, or no api_key on a local server"
    if any(w in lowered for w in ("unauthorized", "401", "403", "forbidden", "permission",
                                  "api key", "api-key")):  # fmt: skip
        return "the server refused the key: check api_key"
    if any(w in lowered for w in ("connect", "refused", "timed out", "timeout", "resolve",
                                  "unreachable")):  # fmt: skip
        return "is the server running at that address?"
    if "dimension" in lowered:
        return "the collection's vectors have another dimension: check embedder"
    return type(exc).__name__


class StoreSettings(BaseModel):
    """What configures one collection of a vector store that runs in the process
    (``path``) or as a server (``url``): a plugin's ``[plugins.KIND.stores.NAME]``."""

    model_config = {"extra": "forbid"}

    path: str | None = None
    url: str | None = None
    #: the server's key; never printed
    api_key: SecretStr | None = None
    collection: str = "pilothouse"
    #: the registered embedder that makes its vectors (queries and ingest alike)
    embedder: str = "minilm"
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _one_place(self) -> StoreSettings:
        if bool(self.path) == bool(self.url):
            raise ValueError("give a path (the store in this process) or a url (a server)")
        return self


class VectorStore(abc.ABC):
    """One collection of an external vector database. Subclass it in a plugin and
    register it with ``register_stores``; its ``name`` is the retriever's."""

    name: str = ""
    #: the vendor's name, as messages say it (``chroma``)
    kind: str = ""
    #: the registered embedder that makes its vectors (queries and ingest alike)
    embedder: str = "minilm"
    #: what its search does: ``dense``, or ``hybrid`` (dense fused with keywords)
    mode: str = "dense"

    def __init__(self, name: str, settings: Any) -> None:
        """A store named ``name`` configured by ``settings`` (a model with at least
        ``collection`` and ``embedder``, and ``path``, ``url`` or ``uri``; a store with
        vectorizers of its own may add ``vectorizer``); its client is made on first use."""
        self.name = name
        self.settings = settings
        self.embedder = settings.embedder
        #: the store's own vectorizer, when settings choose it: it makes the vectors of
        #: chunks and queries alike, and the embedder is not used
        self.vectorizer: str | None = getattr(settings, "vectorizer", None)
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def made_by(self) -> str:
        """What makes its vectors: the embedder's name, or ``KIND:VECTORIZER`` (the
        store's own)."""
        return f"{self.kind}:{self.vectorizer}" if self.vectorizer else self.embedder

    def passage(self, id: str, score: float, kept: Mapping[str, Any],
                text: str | None = None) -> Passage:  # fmt: skip
        """A found chunk as every store answers it: ``kept`` is what the store keeps
        beside the vector (source, heading, position, tags and, unless ``text`` is
        given, the text; any other key is the chunk's metadata, passed on)."""
        extra = {key: value for key, value in kept.items()
                 if key not in RESERVED_KEYS and value is not None}  # fmt: skip
        return Passage(
            id=str(id), text=str(kept.get("text", "") if text is None else text),
            source=str(kept.get("source", "")), score=float(score),
            metadata={**extra, "heading": kept.get("heading", ""),
                      "position": kept.get("position"), "tags": list(kept.get("tags") or []),
                      "store": f"{self.kind}:{self.name}"},
        )  # fmt: skip

    def where(self) -> str:
        """``KIND store NAME at PLACE, collection C``, for messages: the place's URL
        without credentials (never a secret)."""
        s = self.settings
        place = getattr(s, "path", None) or bare_url(
            getattr(s, "url", None) or getattr(s, "uri", None) or ""
        )
        return f"{self.kind} store {self.name!r} at {place}, collection {s.collection!r}"

    @abc.abstractmethod
    def prepare(self, embedder: Embedder, *, create: bool) -> None:
        """Connect and check the collection: it exists (``create``: make it), and its
        vectors have the embedder's dimension. Raise :class:`VectorStoreError` saying
        what is wrong and how to fix it."""

    @abc.abstractmethod
    def query(
        self, vector: list[float], text: str, k: int, filters: Filters | None
    ) -> list[Passage]:
        """Up to ``k`` passages, best first, of those ``filters`` keep (in the store's
        own filter language, before its top ``k``); ``text`` for a hybrid search."""

    @abc.abstractmethod
    def digests(self, sources: Sequence[str]) -> dict[str, str]:
        """The digest stored for each of ``sources`` that the collection holds."""

    @abc.abstractmethod
    def sources_under(self, folder: str) -> list[str]:
        """The sources ingested from under ``folder`` (ending in a slash)."""

    @abc.abstractmethod
    def replace(self, source: str, chunks: Sequence[StoredChunk]) -> None:
        """The chunks of ``source`` in place of what it had."""

    @abc.abstractmethod
    def remove(self, source: str) -> None:
        """Drop every chunk of ``source``."""

    def close(self) -> None:  # noqa: B027 - a client with nothing to release
        """Release the client."""


class StoreVectors(Embedder):
    """The vectors a store makes itself (its vectorizer): chunks and queries go to it as
    text, with no vector; ``name`` (``KIND:VECTORIZER``) is what the collection records
    as its embedder."""

    dimension = 0

    def __init__(self, store: VectorStore) -> None:
        """The vectorizer of ``store``."""
        self.name = store.made_by

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """No vector for any text: the store makes them."""
        return [[] for _ in texts]


class StoreRetriever(Retriever):
    """The retriever the core makes of a registered store."""

    def __init__(self, store: VectorStore, embedders: Mapping[str, Any]) -> None:
        self.store = store
        self.name = store.name
        self._embedders = embedders  # the registry's table: filled once plugins load
        self._ready = False

    def embedder(self) -> Embedder:
        """The store's embedder, from the registry (or its own vectorizer, when its
        settings choose one)."""
        if self.store.vectorizer:
            return StoreVectors(self.store)
        entry = self._embedders.get(self.store.embedder)
        if entry is None:
            known = ", ".join(sorted(self._embedders)) or "none"
            raise NotFound(
                f"{self.store.where()}: no embedder named {self.store.embedder!r}"
                f" (registered: {known})"
            )
        return entry.value

    def ready(self, *, create: bool = False) -> Embedder:
        """The embedder, once the store was checked against it (in the caller's thread)."""
        embedder = self.embedder()
        if not self._ready or create:
            # a plugin's own error (its client missing, say) becomes the store's line too
            with failures(self.store, "open"):
                self.store.prepare(embedder, create=create)
            self._ready = True
        return embedder

    async def search(
        self, query: str, *, k: int = 4, filters: Filters | None = None
    ) -> list[Passage]:
        """The ``k`` best passages of the store, in a worker thread."""

        def go() -> list[Passage]:
            embedder = self.ready()
            (vector,) = embedder.embed([query])
            with failures(self.store, "search"):
                return self.store.query(list(vector), query, k, filters)

        return await run_blocking(go, name=f"retriever {self.name}")

    async def aclose(self) -> None:
        """Close the store's client."""
        self.store.close()
