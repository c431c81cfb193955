"""The knowledge base (chunks, vectors, full text, hybrid search) and memory per subject.

The names here are public: retriever plugins build on them. It imports only the
vocabulary (``pilothouse``'s top modules); the engine, the store and the views never.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .base import KnowledgeBase, KnowledgeError
from .memory import remember

if TYPE_CHECKING:
    from ..embedding import Embedder
    from ..settings import Settings


def knowledge_location(settings: Settings) -> str | Path:
    """Where the workspace's knowledge base is: beside the run store, so in the same
    PostgreSQL database when ``store_url`` names one, else ``knowledge.db``."""
    return settings.store_url or settings.workspace / "knowledge.db"


def open_knowledge(settings: Settings, embedder: Embedder) -> KnowledgeBase:
    """The workspace's knowledge base, on the backend the settings pick."""
    location = knowledge_location(settings)
    if isinstance(location, str):
        from .postgres import PgKnowledgeBase

        return PgKnowledgeBase(location, embedder)
    return KnowledgeBase(location, embedder, index_from=settings.knowledge_index_from)


__all__ = ["KnowledgeBase", "KnowledgeError", "knowledge_location", "open_knowledge", "remember"]
