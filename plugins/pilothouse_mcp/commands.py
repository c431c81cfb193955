"""``pilothouse mcp``: the servers configured and their tools (``list``), servers taken
from an ``mcp.json`` (``import``), and this workspace's crews served over MCP
(``serve``)."""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import anyio
import click

from pilothouse import ConfigError, PilothouseError, Runtime, ToolError, token_off_loopback

from . import McpSettings
from .importing import read_mcp_json, server_tables


def add_commands(cli: Any) -> None:
    """The ``mcp`` group on the ``pilothouse`` command."""

    @cli.group(name="mcp")
    def mcp() -> None:
        """MCP servers: their tools in personas, as mcp:SERVER/TOOL."""

    add_serve(mcp)

    @mcp.command(name="list")
    @click.argument("name", required=False)
    @click.pass_obj
    def list_servers(obj: Any, name: str | None) -> None:
        """Show the configured servers, whether they start, and their tools (NAME: one)."""
        runtime = Runtime(obj.settings, log_events=False)
        servers = runtime.settings.section("mcp").servers
        if name is not None and name not in servers:
            known = ", ".join(sorted(servers)) or "none"
            raise ConfigError(f"no MCP server named {name!r} (configured: {known})")
        if not servers:
            click.echo("no MCP servers: add [plugins.mcp.servers.NAME] to pilothouse.toml"
                       " or run 'pilothouse mcp import mcp.json'")  # fmt: skip
            return
        failed = anyio.run(_list, runtime, name)
        if failed:
            raise SystemExit(1)

    @mcp.command(name="import")
    @click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--to", "target", type=click.Path(dir_okay=False, path_type=Path),
                  default=Path("pilothouse.toml"), show_default=True,
                  help="The TOML file the servers are added to.")  # fmt: skip
    @click.option("--dry-run", is_flag=True, help="Print the tables; write nothing.")
    def import_servers(file: Path, target: Path, dry_run: bool) -> None:
        """Add the servers of an mcp.json (Claude Desktop, Claude Code, Cursor, VS Code)
        as [plugins.mcp.servers.NAME] tables. Secrets are not copied: each is read from
        an environment variable, named on the way."""
        found = read_mcp_json(file)
        existing = _servers_in(target)
        for name in [n for n in found.servers if n in existing]:
            del found.servers[name]
            click.echo(f"{name}: already in {target}: left as it is there", err=True)
        for name, note in found.notes:
            if name not in existing:
                click.echo(f"{name}: {note}", err=True)
        if not found.servers:
            click.echo(f"nothing to add to {target}", err=True)
            return
        tables = server_tables(found.servers)
        if dry_run:
            click.echo(tables, nl=False)
            return
        _append(target, tables)
        for name, server in found.servers.items():
            how = f"url {server.url}" if server.url else f"command {server.command}"
            click.echo(f"added {name} ({how}) to {target}; its tools: mcp:{name}/*")


def add_serve(mcp: Any) -> None:
    """``pilothouse mcp serve``."""

    @mcp.command(name="serve")
    @click.option(
        "--http",
        "http",
        metavar="[HOST:PORT]",
        is_flag=False,
        flag_value="",
        help="Serve over streamable HTTP instead of stdio: at HOST:PORT (port 0:"
        " any free one), or alone where [plugins.mcp.serve] says.",
    )
    @click.pass_obj
    def serve(obj: Any, http: str | None) -> None:  # fmt: skip
        """Offer this workspace's crews to MCP clients as tools (with inbox and decide,
        and run timelines as resources): over stdio for a client that starts it, or over
        streamable HTTP (loopback unless told otherwise; a bearer token from settings)."""
        from .serving import serve_http, serve_stdio

        runtime = Runtime(obj.settings)
        wanted = runtime.settings.section("mcp").serve
        if http is None:
            anyio.run(serve_stdio, runtime, wanted.crews)
            return
        host, port = wanted.host, wanted.port
        if http:
            host, _, given = http.rpartition(":")
            if not host or not given.isdigit():
                raise click.BadParameter(f"{http!r}: give HOST:PORT", param_hint="--http")
            port = int(given)
        token = wanted.token.get_secret_value() if wanted.token else None
        token_off_loopback(host, token, "mcp.serve")
        anyio.run(serve_http, runtime, host, port, token, wanted.crews)


async def _list(runtime: Runtime, only: str | None) -> bool:
    """Print each server's state and tools; whether any failed to start."""
    from .tool import McpTool

    failed = False
    async with runtime:
        toolset = runtime.registry.toolsets["mcp"].value
        for name, server in toolset.servers.items():
            if only is not None and name != only:
                continue
            s = server.settings
            where = f"http {s.url}" if s.url else "stdio " + " ".join([s.command or "", *s.args])
            try:
                specs = await toolset.tools(server)
            except (ToolError, PilothouseError) as exc:
                failed = True
                click.echo(f"{name}  {where}  failed: {exc}")
                continue
            click.echo(f"{name}  {where}  ready, {len(specs)} tools")
            for spec in specs:
                tool = McpTool(toolset, server, spec)
                marks = [
                    "read-only" if tool.read_only else "writes",
                    "needs approval" if tool.requires_approval else "",
                    "" if toolset.offered(server, spec.name) else "not offered (settings)",
                ]
                first = (tool.description.splitlines() or [""])[0][:70]
                click.echo(f"  {spec.name:<28} {', '.join(m for m in marks if m):<32} {first}")
    return failed


def _servers_in(target: Path) -> set[str]:
    """The servers a TOML file already configures (an unreadable one is an error)."""
    if not target.exists():
        return set()
    try:
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{target}: cannot read it as TOML: {exc}") from None
    return set(data.get("plugins", {}).get("mcp", {}).get("servers", {}))


def _append(target: Path, tables: str) -> None:
    """Add the tables to the file, which is replaced only once the whole of it parses and
    its MCP section is valid (a failure leaves it as it was)."""
    before = target.read_text(encoding="utf-8") if target.exists() else ""
    after = before + ("\n" if before and not before.endswith("\n") else "")
    after += ("\n" if before else "") + tables
    try:
        section = tomllib.loads(after).get("plugins", {}).get("mcp", {})
        McpSettings.model_validate(section)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"{target}: the servers cannot be added: {exc}") from None
    fd, tmp = tempfile.mkstemp(dir=target.resolve().parent, prefix=".pilothouse-", suffix=".toml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(after)
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o777)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
