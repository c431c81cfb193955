"""Retrievers: a query in, ranked passages out.

Retrieved text is data, not instructions: the context builder fences it as
quoted material before a model sees it.
"""

from __future__ import annotations

import abc
from typing import Any

from pydantic import BaseModel, Field


class Passage(BaseModel):
    """One retrieved piece of text with where it came from."""

    id: str
    text: str
    source: str = ""
    score: float = 0.0
    metadata: dict[str, Any] = Field(default_factory=dict)


class Filters(BaseModel):
    """What a search keeps, applied by the store before it ranks (not after the top
    ``k``): passages whose source contains ``source``, and carrying ``tag``."""

    model_config = {"extra": "forbid"}

    source: str | None = None
    tag: str | None = None


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
