"""Collections in Milvus as retrievers (the ``milvus`` extra, on the official
``pymilvus`` client, with Milvus Lite for a local file).

``[plugins.milvus.stores.NAME]`` names one: ``uri`` (a ``.db`` file: Milvus Lite in
this process; or a server's ``http://host:19530``; ``token`` for it), ``collection``,
``embedder`` and ``timeout_s``. Personas list NAME in ``retrievers``. The search is
hybrid: the dense vector, and Milvus's own BM25 function over the chunk's text (a
sparse vector Milvus makes), fused by Milvus's RRF ranker; ``source`` and ``tag``
filters are ``array_contains`` expressions on both legs, before their top k.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SecretStr

from pilothouse import hookimpl


class StoreSettings(BaseModel):
    """One Milvus collection: Milvus Lite (a ``.db`` file) or a server."""

    model_config = {"extra": "forbid"}

    uri: str
    #: a server's token (``user:password`` or an API key); never printed
    token: SecretStr | None = None
    collection: str = "pilothouse"
    embedder: str = "minilm"
    timeout_s: float = Field(default=10.0, gt=0)


class MilvusSettings(BaseModel):
    """``[plugins.milvus]``: the Milvus collections personas may retrieve from."""

    model_config = {"extra": "forbid"}

    stores: dict[str, StoreSettings] = Field(default_factory=dict)


@hookimpl
def register_settings(register: Any) -> None:
    """The section ``[plugins.milvus]``."""
    register("milvus", MilvusSettings)


@hookimpl
def register_stores(register: Any, settings: Any) -> None:
    """A store per configured name (nothing connects until it is used)."""
    from .store import MilvusStore

    for name, store in settings.section("milvus").stores.items():
        register(MilvusStore(name, store))
