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


class Retriever(abc.ABC):
    """Ranked passages for a query. Register one through ``register_retrievers``."""

    name: str = ""

    @abc.abstractmethod
    async def search(self, query: str, *, k: int = 4) -> list[Passage]:
        """Return up to ``k`` passages, best first."""

    async def aclose(self) -> None:  # noqa: B027 - optional, most retrievers hold nothing
        """Release connections and other resources; called when the runtime closes."""
