"""The knowledge base (chunks, vectors, full text, hybrid search) and memory per subject.

The names here are public: retriever plugins build on them. It imports only the
vocabulary (``pilothouse``'s top modules); the engine, the store and the views never.
"""

from .base import KnowledgeBase, KnowledgeError
from .memory import remember

__all__ = ["KnowledgeBase", "KnowledgeError", "remember"]
