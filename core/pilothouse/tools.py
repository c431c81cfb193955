"""Tools: typed Python callables a model may call.

Arguments are validated against a pydantic model built from the function's
signature; its JSON schema is what the model is offered. A bad call is an
error *returned to the model*, never an exception raised into the engine.
"""

from __future__ import annotations

import inspect
import json
import re
import time
from collections.abc import Callable
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .blocking import report_held_loop, run_blocking
from .errors import ToolError
from .model import ToolSpec


class Tool:
    """A callable offered to models.

    Build one with :func:`tool` or ``Tool(func)``. ``requires_approval`` marks a
    tool whose calls a person must approve first (the human-on-the-loop layer
    enforces it). Synchronous functions run in a thread of their own
    (:func:`pilothouse.run_blocking`: a run that times out or is cancelled does
    not wait for them) unless ``blocking=False`` says they are quick.

    A tool whose results come from outside the team (an MCP server, a web page)
    sets ``external = True``: its results pass the persona's retrieval guardrails
    like retrieved passages before its model reads them.

    ``idempotent=False`` marks a tool that must not run twice for one call (it books,
    sends, appends): each call is committed to the log before it is sent and after it
    answers, and a run resumed after a crash that finds one sent but unanswered asks
    a person (``tool_outcome_unknown``) instead of sending it again.
    """

    #: results are outside text, screened like retrieved passages
    external: bool = False
    #: where the tool runs, as logs show it (``mcp:SERVER``); None: the plugin that
    #: registered it
    source: str | None = None

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        requires_approval: bool = False,
        blocking: bool = True,
        idempotent: bool = True,
    ) -> None:
        self.func = func
        #: the same call twice does what it does once (a resumed run may send it again)
        self.idempotent = idempotent
        self.name = name or func.__name__
        if not TOOL_NAME.fullmatch(self.name):
            raise ToolError(
                f"tool name {self.name!r}: model APIs take 1-64 letters, digits, '_' or '-'"
            )
        self.description = (description or inspect.getdoc(func) or "").strip()
        self.requires_approval = requires_approval
        self.blocking = blocking
        self.is_async = inspect.iscoroutinefunction(func)
        self.arguments_model = _arguments_model(func, self.name)
        self._spec: ToolSpec | None = None

    def spec(self) -> ToolSpec:
        """The tool as offered to a model (built once)."""
        if self._spec is None:
            schema = self.arguments_model.model_json_schema()
            schema.pop("title", None)
            self._spec = ToolSpec(name=self.name, description=self.description, parameters=schema)
        return self._spec

    def parse_arguments(self, raw: str) -> BaseModel:
        """Validate the model's raw JSON arguments; raise :class:`ToolError` if bad."""
        try:
            data = json.loads(raw or "{}")
        except json.JSONDecodeError as exc:
            raise ToolError(f"arguments of {self.name!r} are not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ToolError(f"arguments of {self.name!r} must be a JSON object")
        return self.validate(data)

    def validate(self, data: dict[str, Any]) -> BaseModel:
        """The arguments (a JSON object) checked against the tool's signature; raise
        :class:`ToolError` saying what is wrong. A tool whose arguments are described
        elsewhere (an MCP server's schema) overrides this."""
        try:
            return self.arguments_model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
                for e in exc.errors()
            )
            raise ToolError(f"invalid arguments for {self.name!r}: {problems}") from None

    async def invoke(self, arguments: BaseModel) -> Any:
        """Call the function with validated arguments."""
        kwargs = {k: getattr(arguments, k) for k in type(arguments).model_fields}
        if self.is_async:
            return await self.func(**kwargs)
        if self.blocking:
            # A thread cannot be stopped: a run cancelled or timed out meanwhile goes on
            # without it (the call finishes on its own and its result is dropped).
            return await run_blocking(lambda: self.func(**kwargs), name=f"tool {self.name}")
        started = time.perf_counter()
        try:
            return self.func(**kwargs)
        finally:
            report_held_loop(f"tool {self.name!r}", started,
                             "drop blocking=False from it to run it in a thread")  # fmt: skip

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"


#: what model APIs (OpenAI, Anthropic, ...) accept as a function name
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def tool(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    blocking: bool = True,
    idempotent: bool = True,
) -> Any:
    """Decorator: turn a typed function into a :class:`Tool` (``@tool`` or ``@tool(...)``)."""

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(
            f,
            name=name,
            description=description,
            requires_approval=requires_approval,
            blocking=blocking,
            idempotent=idempotent,
        )

    return wrap(func) if func is not None else wrap


def canonical_json(text: str) -> str:
    """Arguments as written by a model, in one canonical form (keys sorted)."""
    try:
        return json.dumps(json.loads(text or "{}"), sort_keys=True)
    except json.JSONDecodeError:
        return text


def result_text(value: Any) -> str:
    """How a tool's return value is shown to the model."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def _arguments_model(func: Callable[..., Any], name: str) -> type[BaseModel]:
    hints = get_type_hints(func)
    fields: dict[str, Any] = {}
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    model_name = "".join(part.capitalize() for part in name.split("_")) + "Arguments"
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)
