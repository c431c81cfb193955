"""Collections in Qdrant as retrievers (the ``qdrant`` extra, on the official
``qdrant-client``).

``[plugins.qdrant.stores.NAME]`` names one: ``path`` (Qdrant's local mode, in this
process, its files in that folder) or ``url`` (a Qdrant server; ``api_key``),
``collection``, ``embedder`` and ``timeout_s``. Personas list NAME in ``retrievers``.
The search is hybrid: a dense vector named after the embedder and a sparse vector of
the chunk's words (IDF applied by Qdrant), fused by reciprocal rank by Qdrant's query
API; ``source`` and ``tag`` filters are payload conditions on arrays, applied before
either leg's top k.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from pilothouse import StoreSettings as BaseStoreSettings
from pilothouse import hookimpl


class StoreSettings(BaseStoreSettings):
    """One Qdrant collection: local mode (``path``) or on a server (``url``)."""


class QdrantSettings(BaseModel):
    """``[plugins.qdrant]``: the Qdrant collections personas may retrieve from."""

    model_config = {"extra": "forbid"}

    stores: dict[str, StoreSettings] = Field(default_factory=dict)


@hookimpl
def register_settings(register: Any) -> None:
    """The section ``[plugins.qdrant]``."""
    register("qdrant", QdrantSettings)


@hookimpl
def register_stores(register: Any, settings: Any) -> None:
    """A store per configured name (nothing connects until it is used)."""
    from .store import QdrantStore

    for name, store in settings.section("qdrant").stores.items():
        register(QdrantStore(name, store))
