"""The exception hierarchy: one base, one subclass per condition a caller can act on.

Every error pilothouse raises on purpose is a :class:`PilothouseError`; its
message names the cause (the file, the plugin, the limit) so that a person can
fix it without reading a traceback.
"""

from __future__ import annotations


class PilothouseError(Exception):
    """Base class of every error raised on purpose by pilothouse."""

    #: a short machine-readable name, logged with the error
    kind = "error"


class ConfigError(PilothouseError):
    """Settings or a config file are invalid. Raised by :mod:`pilothouse.settings`."""

    kind = "config"


class CrewFileError(ConfigError):
    """A TOML crew file cannot be read: the message has the file, line/key and reason of
    every problem found, one a line (``line``, ``key`` and ``reason`` are the first's;
    ``more`` holds the others as ``(line, key, reason)``)."""

    kind = "crew_file"

    def __init__(
        self,
        path: str,
        reason: str,
        *,
        line: int | None = None,
        key: str = "",
        more: list[tuple[int | None, str, str]] | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.reason = reason
        self.more = list(more or [])
        lines = [_where(path, line, key) + f": {reason}"]
        lines += [_where(path, at, name) + f": {why}" for at, name, why in self.more]
        super().__init__("\n".join(lines))


def _where(path: str, line: int | None, key: str) -> str:
    where = path if line is None else f"{path}:{line}"
    return f"{where} [{key}]" if key else where


class NotFound(PilothouseError):
    """A named crew, persona, tool, model, retriever, guardrail or run does not exist."""

    kind = "not_found"


class PluginError(PilothouseError):
    """A plugin failed to import, to register, or raised inside a hook.

    ``plugin`` holds the name of the plugin at fault.
    """

    kind = "plugin"

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        self.message = message
        super().__init__(f"plugin {plugin!r}: {message}")


class ModelError(PilothouseError):
    """A model call failed or returned something unusable. Raised by model providers."""

    kind = "model"

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        self.request_id = request_id
        if request_id:
            message = f"{message} (request id {request_id})"
        super().__init__(message)


class ToolError(PilothouseError):
    """A tool call was invalid or the tool raised. Returned to the model, not raised to runs."""

    kind = "tool"


class LimitExceeded(PilothouseError):
    """A rule of engagement of the crew was hit: the run ends with this reason.

    ``limit`` is the name of the limit (``max_steps``, ``loop``, ``budget_tokens``...).
    """

    kind = "limit"

    def __init__(self, limit: str, message: str) -> None:
        self.limit = limit
        super().__init__(message)


class LoopDetected(LimitExceeded):
    """The run repeats itself without progress (same input, ping-pong, same tool call)."""


class GuardrailBlocked(PilothouseError):
    """A guardrail returned ``block``: the step, and so the run, stops."""

    kind = "guardrail"

    def __init__(self, guardrail: str, reason: str) -> None:
        self.guardrail = guardrail
        super().__init__(f"blocked by guardrail {guardrail!r}: {reason}")


class EscalationRejected(PilothouseError):
    """A person rejected an escalated step and the crew's rule is to fail the run."""

    kind = "rejected"


class DecisionError(PilothouseError):
    """A decision cannot be applied: already decided, no longer waiting, or invalid."""

    kind = "decision"


class RunBusy(PilothouseError):
    """Another live process executes the run (resuming it would run it twice)."""

    kind = "busy"


class StoreError(PilothouseError):
    """The run store cannot be opened or written."""

    kind = "store"


class StoreUnavailable(StoreError):
    """The run store cannot be reached for now: its server is down or does not answer,
    the connection was lost, the file is locked beyond the busy timeout or the disk is
    full. What failed did not happen (or is settled when it is tried again): a caller
    may wait and try again, which the event log does for runs (``store_outage_s``)."""

    kind = "store_unavailable"


class PortalError(PilothouseError):
    """The audit portal could not be generated or built (the builder's output says why)."""

    kind = "portal"
