"""``mcp.json`` as Claude Desktop, Claude Code, Cursor and VS Code write it, read into
``[plugins.mcp.servers.NAME]`` tables.

Secrets written in the file as plain values (an env variable or header named like a
key or token) are not copied: the table reads them from the environment as
``${VAR}``, and the user is told which variable to set (never its value).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pilothouse import ConfigError

from . import ServerSettings

#: names that hold credentials
_SECRET_NAME = re.compile(
    r"key|token|secret|passw|auth(?!or)|credential|cookie|(^|_)pat($|_)", re.I
)
#: values that look like credentials whatever their name
_SECRET_VALUE = re.compile(r"^(sk-|ghp_|gho_|github_pat_|xox[abp]-|glpat-|AKIA)")
#: ${env:VAR} (Cursor, VS Code), ${input:ID} (VS Code), ${VAR} and ${VAR:-default}
_REFERENCE = re.compile(r"\$\{(?:(env|input):)?([A-Za-z_][A-Za-z0-9_.-]*)(?::-[^}]*)?\}")


@dataclass
class Imported:
    """What one ``mcp.json`` gave: server tables, and what the user must know."""

    servers: dict[str, ServerSettings] = field(default_factory=dict)
    #: (server, line): a secret left out, a variable to set, the server skipped
    notes: list[tuple[str, str]] = field(default_factory=list)


def read_mcp_json(path: Path) -> Imported:
    """The servers of an ``mcp.json`` (``mcpServers`` or VS Code's ``servers``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object with 'mcpServers' or 'servers'")
    entries = data.get("mcpServers", data.get("servers"))
    if not isinstance(entries, dict):
        raise ConfigError(
            f"{path}: no 'mcpServers' (Claude, Cursor) or 'servers' (VS Code) object in it"
        )
    # VS Code's ${workspaceFolder} is the folder that holds .vscode
    folder = path.parent.parent if path.parent.name == ".vscode" else path.parent
    found = Imported()
    for raw_name, entry in entries.items():
        name = re.sub(r"[^A-Za-z0-9_-]", "-", str(raw_name))[:30]
        if not isinstance(entry, dict):
            found.notes.append((str(raw_name), "skipped: its entry is not an object"))
            continue
        _one(name, entry, folder.resolve(), found)
    return found


def _one(name: str, entry: dict[str, Any], folder: Path, found: Imported) -> None:
    kind = str(entry.get("type") or entry.get("transport") or "").lower()
    if entry.get("disabled") is True:
        found.notes.append((name, "skipped: disabled in the file"))
        return
    if kind == "sse":
        found.notes.append(
            (
                name,
                "skipped: it uses the old SSE transport; give its"
                " streamable-HTTP URL (usually ending in /mcp) as url",
            )
        )
        return

    def text(value: Any) -> str:
        return _references(str(value), name, folder, found)

    table: dict[str, Any] = {}
    if entry.get("command"):
        table["command"] = text(entry["command"])
        table["args"] = [text(a) for a in entry.get("args") or []]
        table["env"] = {k: _secret("env", name, k, str(v), found) for k, v in
                        (entry.get("env") or {}).items()}  # fmt: skip
        if entry.get("cwd"):
            table["cwd"] = text(entry["cwd"])
    elif entry.get("url") or entry.get("serverUrl"):
        table["url"] = text(entry.get("url") or entry.get("serverUrl"))
        table["headers"] = {k: _secret("header", name, k, str(v), found) for k, v in
                            (entry.get("headers") or {}).items()}  # fmt: skip
    else:
        found.notes.append((name, "skipped: it has neither a command nor a url"))
        return
    if entry.get("envFile"):
        found.notes.append((name, "its envFile is not read: set those variables in env"))
    try:
        found.servers[name] = ServerSettings(**table)
    except ValidationError as exc:
        problem = "; ".join(e["msg"] for e in exc.errors())
        found.notes.append((name, f"skipped: {problem}"))


def _references(value: str, server: str, folder: Path, found: Imported) -> str:
    """Variables in the file's own syntax as ``${VAR}`` (read from the environment)."""

    def one(match: re.Match[str]) -> str:
        kind, ref = match.group(1), match.group(2)
        if kind is None and ref == "workspaceFolder":
            return str(folder)
        if kind is None and ref == "userHome":
            return str(Path.home())
        var = re.sub(r"[^A-Za-z0-9_]", "_", ref).upper() if kind == "input" else ref
        if kind == "input":
            found.notes.append(
                (
                    server,
                    f"the prompt ${{input:{ref}}} is read from the"
                    f" environment as ${{{var}}}: set {var}",
                )
            )
        return "${" + var + "}"

    return _REFERENCE.sub(one, value)


def _secret(what: str, server: str, key: str, value: str, found: Imported) -> str:
    """A value to keep; a plain secret replaced by a reference to the environment."""
    if "${" in value:
        return _references(value, server, Path("."), found)
    scheme, _, rest = value.partition(" ")
    bearer = scheme.lower() in ("bearer", "basic", "token") and bool(rest)
    if not (_SECRET_NAME.search(key) or _SECRET_VALUE.match(rest if bearer else value)):
        return value
    var = key if what == "env" else re.sub(r"[^A-Za-z0-9]", "_", f"{server}_{key}").upper()
    if what == "header" and bearer:
        var = re.sub(r"[^A-Za-z0-9]", "_", f"{server}_TOKEN").upper()
    found.notes.append(
        (
            server,
            f"{what} {key} holds a secret: it is not copied; set {var}"
            f" in the environment (read as ${{{var}}})",
        )
    )
    return f"{scheme} ${{{var}}}" if what == "header" and bearer else f"${{{var}}}"


def server_tables(servers: dict[str, ServerSettings]) -> str:
    """``[plugins.mcp.servers.NAME]`` tables, in TOML, with only what differs from the
    defaults."""
    out = []
    for name, server in servers.items():
        out.append(f"[plugins.mcp.servers.{name}]")
        for key, value in server.model_dump(exclude_defaults=True).items():
            out.append(f"{key} = {_toml(value)}")
        out.append("")
    return "\n".join(out)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items())
        return "{ " + ", ".join(pairs) + " }" if value else "{}"
    # a JSON string is a TOML basic string (the same escapes)
    return json.dumps(str(value), ensure_ascii=False)
