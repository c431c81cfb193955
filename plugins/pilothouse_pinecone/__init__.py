"""Indexes in Pinecone as retrievers (the ``pinecone`` extra, on the official
``pinecone`` client, which speaks the data plane of API version 2025-10).

``[plugins.pinecone.stores.NAME]`` names one: ``url`` (the index's host, as the
console or ``describe_index`` gives it, or Pinecone Local's ``http://localhost:5081``),
``api_key`` (never printed), ``collection`` (the namespace; default ``pilothouse``),
``embedder`` and ``timeout_s``. The index is made in Pinecone (its dimension the
embedder's); ``pilothouse ingest --into NAME`` fills the namespace. Personas list
NAME in ``retrievers``. With ``vectorizer`` (the hosted model of an index with
integrated embedding) Pinecone embeds chunks and queries itself (records upserted as
text, searched with text). Otherwise the search is sparse-dense on a ``dotproduct`` index (a
sparse vector of the chunk's words beside the embedder's, as Pinecone recommends for
hybrid search) and dense on any other; ``source`` and ``tag`` filters are metadata
filters, applied by Pinecone before the top k.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from pilothouse import StoreSettings as BaseStoreSettings
from pilothouse import hookimpl


class StoreSettings(BaseStoreSettings):
    """One namespace (``collection``) of a Pinecone index (its host in ``url``)."""

    #: an index with integrated embedding: the hosted model it was made with
    #: (``llama-text-embed-v2``...); Pinecone then embeds chunks and queries itself and
    #: ``embedder`` is unused
    vectorizer: str | None = None
    #: the record field the index's ``field_map`` embeds (integrated embedding only)
    text_field: str = "text"

    @model_validator(mode="after")
    def _a_host(self) -> StoreSettings:
        if self.path:
            raise ValueError("Pinecone runs as a service: give the index host as url, not path")
        return self


class PineconeSettings(BaseModel):
    """``[plugins.pinecone]``: the Pinecone indexes personas may retrieve from."""

    model_config = {"extra": "forbid"}

    stores: dict[str, StoreSettings] = Field(default_factory=dict)


@hookimpl
def register_settings(register: Any) -> None:
    """The section ``[plugins.pinecone]``."""
    register("pinecone", PineconeSettings)


@hookimpl
def register_stores(register: Any, settings: Any) -> None:
    """A store per configured name (nothing connects until it is used)."""
    from .store import PineconeStore

    for name, store in settings.section("pinecone").stores.items():
        register(PineconeStore(name, store))
