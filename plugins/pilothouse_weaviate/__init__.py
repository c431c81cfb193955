"""Collections in Weaviate as retrievers (the ``weaviate`` extra, on the official
``weaviate-client`` v4: REST for the schema, gRPC for search and writes).

``[plugins.weaviate.stores.NAME]`` names one: ``url`` (Weaviate's REST address, e.g.
``http://127.0.0.1:8080``), ``grpc_url`` (its gRPC address; default: the same host,
port 50051), ``api_key`` (never printed), ``collection`` (a Weaviate class name: the
first letter is made a capital, as Weaviate requires), ``embedder`` and
``timeout_s``; or ``vectorizer`` (a Weaviate module) to have Weaviate make the
vectors itself. Personas list NAME in ``retrievers``. The search is Weaviate's hybrid:
BM25 over the chunk's text and heading fused with the embedder's vector (a named
vector, after the embedder) by relative score; ``source`` and ``tag`` filters are
Weaviate filters on text arrays, applied before either side's top k.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from pilothouse import StoreSettings as BaseStoreSettings
from pilothouse import hookimpl


class StoreSettings(BaseStoreSettings):
    """One Weaviate collection (its REST address in ``url``)."""

    #: where Weaviate answers gRPC (``HOST:PORT``; default: the url's host, port 50051)
    grpc_url: str | None = None
    #: a vectorizer module of the Weaviate server (``text2vec-transformers``,
    #: ``text2vec-ollama``, ``text2vec-openai``...) that makes the vectors of chunks
    #: (from their heading and text) and of queries; ``embedder`` is then unused
    vectorizer: str | None = None
    #: the module's settings, as Weaviate takes them (``{model = "..."}``)
    vectorizer_config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _a_server(self) -> StoreSettings:
        if self.path:
            raise ValueError("Weaviate runs as a server here: give its url, not a path")
        return self


class WeaviateSettings(BaseModel):
    """``[plugins.weaviate]``: the Weaviate collections personas may retrieve from."""

    model_config = {"extra": "forbid"}

    stores: dict[str, StoreSettings] = Field(default_factory=dict)


@hookimpl
def register_settings(register: Any) -> None:
    """The section ``[plugins.weaviate]``."""
    register("weaviate", WeaviateSettings)


@hookimpl
def register_stores(register: Any, settings: Any) -> None:
    """A store per configured name (nothing connects until it is used)."""
    from .store import WeaviateStore

    for name, store in settings.section("weaviate").stores.items():
        register(WeaviateStore(name, store))
