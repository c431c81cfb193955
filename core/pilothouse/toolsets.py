"""Toolsets: tools a plugin finds at run time rather than registers one by one (the tools
of an MCP server, of a remote API), named by personas with the toolset's prefix.

A persona lists ``"mcp:git/git_log"`` or ``"mcp:time/*"`` beside plain tool names; the
part before the colon names a :class:`Toolset` (``register_toolsets``), the rest is the
toolset's own pattern. Before a run starts the engine asks :meth:`Toolset.check` (a sync,
cheap look: is that server configured?); when a step starts it asks
:meth:`Toolset.resolve` for the :class:`~pilothouse.tools.Tool` objects, which the
toolset may cache for the life of the runtime.
"""

from __future__ import annotations

import abc
from typing import Any

from .tools import Tool


class Toolset(abc.ABC):
    """A source of tools found at run time. Register one through ``register_toolsets``."""

    #: what personas write before the colon: ``mcp`` in ``mcp:time/*``
    prefix: str = ""

    def check(self, pattern: str) -> None:  # noqa: B027 - optional: most patterns resolve
        """Raise :class:`~pilothouse.errors.NotFound` or
        :class:`~pilothouse.errors.ConfigError` when ``pattern`` can never resolve (called
        before a run starts, so it must not wait on the network)."""

    @abc.abstractmethod
    async def resolve(self, pattern: str) -> list[Tool]:
        """The tools ``pattern`` names (may open connections; raise
        :class:`~pilothouse.errors.ToolError` with the remote side's own words when it
        cannot)."""

    async def open(self, task_group: Any) -> None:  # noqa: B027 - optional
        """Called when the runtime starts, with its task group: a toolset that keeps
        connections open runs them as tasks there (each opened and closed in its own
        task)."""

    async def aclose(self) -> None:  # noqa: B027 - optional
        """Close what the toolset opened; called before the runtime's tasks are cancelled."""
