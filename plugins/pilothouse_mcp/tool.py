"""An MCP server's tool as a pilothouse :class:`~pilothouse.Tool`: the server's JSON
Schema offered to the model as it is, the arguments checked against it, the call sent
on the server's shared session, the result turned into text with where it came from."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ConfigDict

from pilothouse import Tool, ToolError, ToolSpec

if TYPE_CHECKING:
    from .toolset import McpToolset, _Server


class Arguments(BaseModel):
    """A call's arguments as the server's schema takes them (any object it accepts)."""

    model_config = ConfigDict(extra="allow")


#: the errors of a session that is gone (its process exited, its connection dropped)
_GONE = ("ClosedResourceError", "BrokenResourceError", "EndOfStream", "ConnectError",
         "RemoteProtocolError", "ReadError")  # fmt: skip


class McpTool(Tool):
    """One tool of one MCP server (its results are outside text: ``external``)."""

    external = True

    def __init__(self, toolset: McpToolset, server: _Server, spec: Any) -> None:
        # not Tool.__init__: there is no Python function, the server holds the signature
        self.toolset, self.server, self.remote = toolset, server, spec
        self.name = function_name(server.name, spec.name)
        self.description = (spec.description or spec.title or spec.name).strip()
        self.source = f"mcp:{server.name}"
        hints = spec.annotations
        read_only = bool(hints and hints.read_only_hint)
        # the protocol's defaults: a tool that does not say so may destroy and repeat
        destructive = not read_only and (hints is None or hints.destructive_hint is not False)
        self.read_only = read_only
        self.idempotent = read_only or bool(hints and hints.idempotent_hint)
        settings = server.settings
        self.requires_approval = (destructive or spec.name in settings.approve) and (
            spec.name not in settings.trust
        )
        self.blocking = False
        self.is_async = True
        self.arguments_model = Arguments
        self._spec: ToolSpec | None = None
        self._checker: Any = False  # not compiled yet

    def spec(self) -> ToolSpec:
        """The tool as the server describes it (its input schema unchanged)."""
        if self._spec is None:
            schema = dict(self.remote.input_schema or {"type": "object"})
            schema.setdefault("type", "object")
            self._spec = ToolSpec(name=self.name, description=self.description, parameters=schema)
        return self._spec

    def validate(self, data: dict[str, Any]) -> BaseModel:
        """The model's arguments, checked against the server's schema."""
        import jsonschema

        validator = self._validator()
        if validator is not None:
            error = jsonschema.exceptions.best_match(validator.iter_errors(data))
            if error is not None:
                where = ".".join(str(p) for p in error.absolute_path) or "(arguments)"
                raise ToolError(f"invalid arguments for {self.name!r}: {where}: {error.message}")
        return Arguments(**data)

    def _validator(self) -> Any:
        """The server's input schema compiled once (compiling costs far more than checking);
        None for a schema that is not valid JSON Schema (the server checks its own)."""
        if self._checker is False:
            import jsonschema

            schema = self.spec().parameters
            try:
                cls = jsonschema.validators.validator_for(schema)
                cls.check_schema(schema)
                self._checker = cls(schema)
            except jsonschema.SchemaError:
                self._checker = None
        return self._checker

    async def invoke(self, arguments: BaseModel) -> Any:
        """Call the tool on the server's session; a session that is gone is made again
        and the call sent again, once, only when the tool says repeating it is safe."""
        data = arguments.model_dump()
        timeout = self.server.settings.timeout_s
        for attempt in (1, 2):
            session = await self.toolset.session(self.server)
            expired = self.server.expired
            try:
                with anyio.fail_after(timeout):
                    result = await session.call_tool(self.remote.name, data)
                break
            except TimeoutError:
                raise ToolError(
                    f"MCP server {self.server.name!r} did not answer {self.remote.name} within"
                    f" {timeout:g} s"
                ) from None
            except Exception as exc:
                # refused for an unknown session: never handled, so sent again whatever
                # the tool is
                unhandled = self.server.expired != expired
                gone = type(exc).__name__ in _GONE or "closed" in str(exc).lower()
                if not (gone or unhandled):
                    raise ToolError(f"MCP server {self.server.name!r}, {self.remote.name}:"
                                    f" {' '.join(str(exc).split())}") from None  # fmt: skip
                await self.toolset.lost(self.server)
                if attempt == 2 or not (self.idempotent or unhandled):
                    said = self.server.said()
                    unsure = "" if self.idempotent else (
                        "; the call was not sent again (it may have run: the tool does not"
                        " say it is safe to repeat)"
                    )  # fmt: skip
                    raise ToolError(
                        f"MCP server {self.server.name!r} went away during {self.remote.name}"
                        + (f" (it said: {said})" if said else "")
                        + unsure
                    ) from None
                await anyio.sleep(0.2)
        return _text(self.server.name, self.remote.name, result)


def _text(server: str, tool: str, result: Any) -> str:
    """A result as the text the model reads: its text, the structured content (checked
    against the tool's output schema by the SDK before it gets here) where there is no
    text, what images, audio and resources there are (named, never their bytes), the
    text of an embedded text resource; an error result raised as a tool error."""
    parts = []
    for item in getattr(result, "content", None) or []:
        kind = getattr(item, "type", "")
        if kind == "text":
            parts.append(item.text)
        elif kind in ("image", "audio"):
            data = getattr(item, "data", "") or ""
            size = len(data) * 3 // 4 - data[-2:].count("=")  # its base64, decoded
            parts.append(f"[{kind} {item.mime_type or ''}, {size} bytes: not shown]")
        elif kind == "resource_link":
            what = f" ({item.mime_type})" if item.mime_type else ""
            parts.append(f"[resource link: {item.name} <{item.uri}>{what}]")
        elif kind == "resource":
            inner = item.resource
            text = getattr(inner, "text", None)
            if text is not None:
                parts.append(f"[resource <{inner.uri}>]\n{text}")
            else:
                parts.append(f"[resource <{inner.uri}> ({inner.mime_type or 'binary'}): not shown]")
    structured = getattr(result, "structured_content", None)
    text = "\n".join(parts)
    if structured is not None and not text:
        text = json.dumps(structured, ensure_ascii=False)
    if getattr(result, "is_error", False):
        raise ToolError(f"MCP server {server!r}, {tool}: {text or 'failed'}")
    return text


def function_name(server: str, tool: str) -> str:
    """The name a model calls a server's tool by: ``server__tool``, in the characters
    model APIs take, at most 64 of them."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{server}__{tool}")[:64]
