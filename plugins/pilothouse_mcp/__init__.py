"""Tools from MCP servers (the ``mcp`` extra, on the official MCP SDK).

Servers are configured in ``[plugins.mcp.servers.NAME]``: ``command``, ``args``,
``env`` for a server run as a child over stdio, or ``url`` and ``headers`` for a
streamable-HTTP one (``${VAR}`` in ``env`` and ``headers`` is read from the
environment, never logged); ``timeout_s`` per call, ``connect_timeout_s``, ``tools``
(an allow list of names or globs) and ``exclude``. Personas name the tools like any
other: ``tools = ["mcp:time/get_current_time", "mcp:git/*"]``; the model calls them
``time__get_current_time``.

One session per server per process, opened on first use and shared by every run; the
tool list is read once and again only when the server says it changed. A destructive
tool (by its own annotations, or named in ``approve``) needs a person's approval of
the exact arguments before it runs; ``trust`` exempts one.

The other way round, ``pilothouse mcp serve`` offers the workspace's crews to MCP
clients (``[plugins.mcp.serve]``: ``host``, ``port``, ``token``, ``crews``).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, SecretStr, model_validator

from pilothouse import hookimpl


class ServerSettings(BaseModel):
    """One MCP server: a command run as a child (stdio) or a URL (streamable HTTP)."""

    model_config = {"extra": "forbid"}

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    #: the longest one call may take (its answer is an error the model reads)
    timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    #: the server's tools to offer (names or globs; none: all)
    tools: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    #: tools that need a person's approval whatever their annotations say
    approve: list[str] = Field(default_factory=list)
    #: tools run without approval whatever their annotations say
    trust: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_transport(self) -> ServerSettings:
        if bool(self.command) == bool(self.url):
            raise ValueError("give a command (a stdio server) or a url (an HTTP one), not both")
        return self


class ServeSettings(BaseModel):
    """``[plugins.mcp.serve]``: this workspace's crews served over MCP
    (``pilothouse mcp serve``)."""

    model_config = {"extra": "forbid"}

    #: streamable HTTP (``--http``): where to listen; loopback unless told otherwise
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    #: HTTP clients must send ``Authorization: Bearer TOKEN`` (needed off loopback)
    token: SecretStr | None = None
    #: the crews offered (names or globs; none: every crew)
    crews: list[str] = Field(default_factory=list)


class McpSettings(BaseModel):
    """``[plugins.mcp]``: the MCP servers whose tools personas may use, and how this
    workspace's crews are served over MCP."""

    model_config = {"extra": "forbid"}

    servers: dict[str, ServerSettings] = Field(default_factory=dict)
    serve: ServeSettings = Field(default_factory=ServeSettings)

    @model_validator(mode="after")
    def _names(self) -> McpSettings:
        for name in self.servers:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,30}", name):
                raise ValueError(f"server name {name!r}: use letters, digits, '_' or '-'")
        return self


@hookimpl
def register_settings(register: Any) -> None:
    """The section ``[plugins.mcp]``."""
    register("mcp", McpSettings)


@hookimpl
def register_toolsets(register: Any, settings: Any) -> None:
    """The ``mcp`` toolset over the configured servers (nothing connects until a run
    uses one)."""
    from .toolset import McpToolset

    register(McpToolset(settings.section("mcp")))


@hookimpl
def register_commands(cli: Any) -> None:
    """``pilothouse mcp list``, ``import`` and ``serve``."""
    from .commands import add_commands

    add_commands(cli)
