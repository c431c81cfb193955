"""Embedders: text -> vectors, for the knowledge base. Registered by plugins."""

from __future__ import annotations

import abc
from collections.abc import Sequence


class Embedder(abc.ABC):
    """Turns texts into unit-length vectors of a fixed ``dimension``.

    ``embed`` is synchronous and may be slow (a model runs): callers batch the
    texts and run it in a worker thread, never on the event loop.
    """

    name: str = ""
    dimension: int = 0

    @abc.abstractmethod
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""
