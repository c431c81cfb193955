"""Retrievers: a query in, ranked passages out.

Retrieved text is data, not instructions: the context builder fences it as
quoted material before a model sees it.
"""

from __future__ import annotations

import abc
import re
from typing import Any

from pydantic import BaseModel, Field, field_validator


class Passage(BaseModel):
    """One retrieved piece of text with where it came from."""

    id: str
    text: str
    source: str = ""
    score: float = 0.0
    metadata: dict[str, Any] = Field(default_factory=dict)


#: a metadata key as every store can filter on it (a property name in Weaviate and
#: Milvus, a JSON path in SQLite): letters, digits and underscores
METADATA_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
#: what stores keep beside a chunk themselves: not a metadata key a person may set
RESERVED_KEYS = frozenset(
    {"id", "text", "source", "heading", "position", "digest", "tags", "segments", "embedder",
     "store", "vector"}
)  # fmt: skip


class Filters(BaseModel):
    """What a search keeps, applied by the store before it ranks (not after the top
    ``k``): passages whose source contains ``source``, carrying ``tag``, and whose
    metadata has each key of ``metadata`` equal to its value."""

    model_config = {"extra": "forbid"}

    source: str | None = None
    tag: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _keys(cls, metadata: dict[str, str]) -> dict[str, str]:
        for key in metadata:
            if not METADATA_KEY.fullmatch(key):
                raise ValueError(f"metadata key {key!r}: use letters, digits and underscores")
        return metadata

    @property
    def empty(self) -> bool:
        """Nothing is filtered out."""
        return not (self.source or self.tag or self.metadata)


class Retriever(abc.ABC):
    """Ranked passages for a query. Register one through ``register_retrievers``.

    ``search`` takes ``filters`` when given (:class:`Filters`); a retriever written
    before filters existed (``search(query, *, k)``) is still called without them.
    :class:`pilothouse.testing.RetrieverContract` holds an implementation to what the
    built-in one does."""

    name: str = ""

    @abc.abstractmethod
    async def search(
        self, query: str, *, k: int = 4, filters: Filters | None = None
    ) -> list[Passage]:
        """Return up to ``k`` passages, best first (only those ``filters`` keep)."""

    async def aclose(self) -> None:  # noqa: B027 - optional, most retrievers hold nothing
        """Release connections and other resources; called when the runtime closes."""


async def search_within(
    retriever: Retriever, query: str, *, k: int, filters: Filters | None
) -> list[Passage]:
    """``retriever.search`` with ``filters`` pushed down; a retriever written before
    filters existed is asked without them when there are none, and refused (never
    asked without them: a filter may be what keeps a persona out of a document) when
    there are."""
    import inspect

    if filters is None or filters.empty:
        return await retriever.search(query, k=k)
    if "filters" not in inspect.signature(retriever.search).parameters:
        from .errors import ConfigError

        raise ConfigError(
            f"retriever {retriever.name!r} takes no filters (source, tag, metadata): drop"
            " them, or ask a retriever that filters"
        )
    return await retriever.search(query, k=k, filters=filters)
