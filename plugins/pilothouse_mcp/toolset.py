"""The ``mcp`` toolset: a session per server, opened on first use in a task of its own,
shared by every run of the process, closed in that same task when the runtime ends."""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import logging
import os
import re
import sys
import tempfile
from typing import Any

import anyio

from pilothouse import ConfigError, NotFound, Tool, ToolError, Toolset

from . import McpSettings, ServerSettings
from .tool import McpTool

log = logging.getLogger("pilothouse.mcp")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Server:
    """One configured server and its session, while it is open."""

    def __init__(self, name: str, settings: ServerSettings) -> None:
        self.name = name
        self.settings = settings
        self.session: Any = None
        self.tools: list[Any] | None = None
        #: tools/list requests made (the list is read once, then on list_changed)
        self.listed = 0
        #: times the server said our session is unknown to it (a restart): a request
        #: refused that way was not handled, and is safe to send again
        self.expired = 0
        self.lock = anyio.Lock()
        self.closing = anyio.Event()
        self.done = anyio.Event()
        #: the server's stderr: kept for its own words on a failure, never on the console
        #: (made when a session first starts)
        self.errlog: Any = None

    def said(self) -> str:
        """The last lines the server wrote on its stderr (its own words on a failure)."""
        if self.errlog is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self.errlog.seek(0)
            lines = [line.strip() for line in self.errlog.read().splitlines() if line.strip()]
            return " | ".join(lines[-3:])
        return ""


class McpToolset(Toolset):
    """Tools of the MCP servers in ``[plugins.mcp.servers]``."""

    prefix = "mcp"

    def __init__(self, settings: McpSettings) -> None:
        self.servers = {name: _Server(name, s) for name, s in settings.servers.items()}
        self._task_group: Any = None

    def check(self, pattern: str) -> None:
        """``server/tool`` or ``server/*`` naming a configured server."""
        server, slash, _ = pattern.partition("/")
        if not slash:
            raise ConfigError(
                f"mcp:{pattern}: name a server and its tools, e.g. mcp:{pattern}/* or"
                f" mcp:{pattern}/TOOL"
            )
        if server not in self.servers:
            known = ", ".join(sorted(self.servers)) or "none"
            raise NotFound(
                f"no MCP server named {server!r} (configured in [plugins.mcp.servers]: {known})"
            )

    async def open(self, task_group: Any) -> None:
        """Keep the runtime's task group: sessions run as tasks there."""
        self._task_group = task_group

    async def resolve(self, pattern: str) -> list[Tool]:
        """The tools of ``server/glob`` (the server's list read once, filtered by the
        pattern and by the server's ``tools`` and ``exclude`` settings)."""
        self.check(pattern)
        name, _, glob = pattern.partition("/")
        server = self.servers[name]
        listed = await self.tools(server)
        chosen = [McpTool(self, server, spec) for spec in listed
                  if fnmatch.fnmatchcase(spec.name, glob or "*")
                  and self.offered(server, spec.name)]  # fmt: skip
        if not chosen and "*" not in glob:
            names = ", ".join(spec.name for spec in listed) or "none"
            raise ToolError(f"MCP server {name!r} has no tool {glob!r} (it has: {names})")
        return chosen

    @staticmethod
    def offered(server: _Server, tool: str) -> bool:
        """Whether the server's settings let personas use this tool (``tools``, an allow
        list, and ``exclude``)."""
        allowed = server.settings.tools
        if allowed and not any(fnmatch.fnmatchcase(tool, g) for g in allowed):
            return False
        return not any(fnmatch.fnmatchcase(tool, g) for g in server.settings.exclude)

    async def tools(self, server: _Server) -> list[Any]:
        """The server's tools as it lists them (read once, again after list_changed)."""
        if server.tools is None or server.session is None:
            session = await self.session(server)
            result = await session.list_tools()
            server.listed += 1
            server.tools = list(result.tools)
        return server.tools

    async def session(self, server: _Server) -> Any:
        """The server's session, started on first use (and again after it was lost)."""
        async with server.lock:
            if server.session is None:
                if self._task_group is None:
                    raise ToolError("MCP tools need a running pilothouse Runtime")
                server.closing, server.done = anyio.Event(), anyio.Event()
                if server.errlog is None:
                    server.errlog = tempfile.TemporaryFile(  # noqa: SIM115 - closed in aclose
                        "w+", encoding="utf-8", errors="replace"
                    )
                try:
                    server.session = await self._task_group.start(self._serve, server)
                except Exception as exc:
                    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                        exc = exc.exceptions[0]  # the task group's wrapping says nothing
                    detail = " ".join(str(exc).split()) or type(exc).__name__
                    said = server.said()
                    raise ToolError(
                        f"cannot start MCP server {server.name!r}: {detail}"
                        + (f" (it said: {said})" if said else "")
                    ) from None
            return server.session

    async def lost(self, server: _Server) -> None:
        """Forget a session that failed: the next use starts a new one."""
        session, server.session = server.session, None
        if session is not None:
            server.closing.set()
            with anyio.move_on_after(5):
                await server.done.wait()

    async def _serve(self, server: _Server, *, task_status: Any) -> None:
        """Open the transport and the session, hand it over, hold it until closing: the
        contexts are entered and left in this one task."""
        from mcp import ClientSession
        from mcp.types import ToolListChangedNotification

        s = server.settings
        started = False
        try:
            async with contextlib.AsyncExitStack() as stack:
                if s.url:
                    from mcp.client.streamable_http import streamable_http_client

                    from .transport import http_client

                    headers = _expand(s.headers, server.name)
                    expired = functools.partial(_expired, server)
                    client = await stack.enter_async_context(
                        http_client(headers, s.timeout_s, expired)
                    )
                    streams = await stack.enter_async_context(
                        streamable_http_client(s.url, http_client=client)
                    )
                    read, write = streams[0], streams[1]
                else:
                    from mcp import StdioServerParameters
                    from mcp.client.stdio import stdio_client

                    env = {**_base_env(), **_expand(s.env, server.name)}
                    params = StdioServerParameters(command=s.command or "", args=s.args,
                                                   env=env, cwd=s.cwd)  # fmt: skip
                    read, write = await stack.enter_async_context(
                        stdio_client(params, errlog=server.errlog)
                    )

                async def heard(message: Any) -> None:
                    if isinstance(message, ToolListChangedNotification):
                        server.tools = None  # read again at the next step

                session = await stack.enter_async_context(
                    ClientSession(read, write, message_handler=heard)
                )
                with anyio.fail_after(s.connect_timeout_s):
                    await session.initialize()
                started = True
                task_status.started(session)
                await server.closing.wait()
        except Exception:
            if not started:
                raise
            log.warning("MCP server %r: session ended: %s", server.name, server.said() or "-")
        finally:
            server.session = None
            server.done.set()

    async def aclose(self) -> None:
        """Close every session, each in its own task, and wait for them."""
        for server in self.servers.values():
            if server.session is not None:
                server.closing.set()
        for server in self.servers.values():
            if not server.done.is_set() and server.closing.is_set():
                with anyio.move_on_after(10):
                    await server.done.wait()
            if server.errlog is not None:
                with contextlib.suppress(OSError):
                    server.errlog.close()
                server.errlog = None


def _expired(server: _Server) -> None:
    server.expired += 1


def _expand(values: dict[str, str], server: str) -> dict[str, str]:
    """``${VAR}`` in header and env values, from the environment (an unset one is an
    error naming it, never its neighbours' values)."""

    def one(match: re.Match[str]) -> str:
        found = os.environ.get(match.group(1))
        if found is None:
            raise ConfigError(
                f"MCP server {server!r} needs ${{{match.group(1)}}}, which is not set"
            )
        return found

    return {key: _VAR.sub(one, value) for key, value in values.items()}


def _base_env() -> dict[str, str]:
    """What a child server inherits: the path to programs and Python's own settings."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR", "SYSTEMROOT")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    env.setdefault("PATH", os.path.dirname(sys.executable))
    return env
