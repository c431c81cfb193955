"""The audit portal: a static mkdocs-material site made from the run store
(``pip install 'pilothouse[portal]'``)."""

from .build import Generated, Portal

__all__ = ["Generated", "Portal"]
