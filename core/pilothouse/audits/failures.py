"""Why a run failed, read back from its events (the monitor and the portal show it)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from ..events import BaseEvent


class FailureInfo(BaseModel):
    """The kind, the exception (the cause, not a PluginError wrapper), the plugin, the
    step under way when it happened, the message, limit hits and the traceback."""

    kind: str = ""
    error_type: str = ""
    message: str = ""
    plugin: str | None = None
    step_id: str | None = None
    persona: str | None = None
    traceback: str = ""
    limits: list[str] = Field(default_factory=list)


def describe_failure(events: Iterable[BaseEvent]) -> FailureInfo | None:
    """The failure behind a run's ``run_failed`` event (None if the run did not fail)."""
    found = FailureInfo()
    failed = False
    open_steps: dict[str, str] = {}  # started and not finished: the step under way
    for event in events:
        e: Any = event
        if event.type == "step_started":
            open_steps[e.step_id or ""] = e.persona
        elif event.type == "step_finished":
            open_steps.pop(e.step_id or "", None)
        elif event.type == "error":
            found.error_type, found.plugin, found.traceback = e.error_type, e.plugin, e.traceback
        elif event.type == "limit_hit":
            found.limits.append(f"{e.limit}: {e.message}")
        elif event.type == "run_failed":
            failed = True
            found.kind, found.message = e.kind, e.message
            found.error_type = found.error_type or e.error_type
            found.plugin = found.plugin or e.plugin
            if open_steps:
                found.step_id, found.persona = list(open_steps.items())[-1]
    return found if failed else None
