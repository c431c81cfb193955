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

from pydantic import BaseModel, Field, SecretStr, model_validator

from pilothouse import hookimpl


class StoreSettings(BaseModel):
    """One Chroma collection: embedded (``path``) or on a server (``url``)."""

    model_config = {"extra": "forbid"}

    path: str | None = None
    url: str | None = None
    #: sent as the server's token (``x-chroma-token``); never printed
    api_key: SecretStr | None = None
    collection: str = "pilothouse"
    embedder: str = "minilm"
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _one_place(self) -> StoreSettings:
        if bool(self.path) == bool(self.url):
            raise ValueError("give a path (Chroma embedded) or a url (a Chroma server)")
        return self


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
