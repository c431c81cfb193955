"""Collections in Chroma as retrievers (the ``chroma`` extra, on the official
``chromadb`` client).

``[plugins.chroma.stores.NAME]`` names one: ``path`` (Chroma embedded in this process,
its files in that folder) or ``url`` (a Chroma server; ``api_key`` sent as its token),
``collection``, ``embedder`` (a registered one; its vectors are written by ``pilothouse
ingest --into NAME``) and ``timeout_s``. Personas list NAME in ``retrievers``. The
search is dense (cosine) with a literal-word leg: the chunks holding the query's words
(Chroma's full-text ``$contains``) join the candidates, and each gains for the share of
those words it holds. ``source`` and ``tag`` filters are pushed down as ``$contains``
on array metadata, before its top k.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from pilothouse import StoreSettings as BaseStoreSettings
from pilothouse import hookimpl


class StoreSettings(BaseStoreSettings):
    """One Chroma collection: embedded (``path``) or on a server (``url``)."""


class ChromaSettings(BaseModel):
    """``[plugins.chroma]``: the Chroma collections personas may retrieve from."""

    model_config = {"extra": "forbid"}

    stores: dict[str, StoreSettings] = Field(default_factory=dict)


@hookimpl
def register_settings(register: Any) -> None:
    """The section ``[plugins.chroma]``."""
    register("chroma", ChromaSettings)


@hookimpl
def register_stores(register: Any, settings: Any) -> None:
    """A store per configured name (nothing connects until it is used)."""
    from .store import ChromaStore

    for name, store in settings.section("chroma").stores.items():
        register(ChromaStore(name, store))
