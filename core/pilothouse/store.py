"""The run store: where the event log lives, behind a small interface.

:class:`RunStore` is what the engine writes to and what the CLI, the monitor
and the portal read from. SQLite (:mod:`pilothouse.sqlite_store`) is the
embedded default; another database can implement the same methods.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from pydantic import BaseModel

from .events import BaseEvent


class RunSummary(BaseModel):
    """One run as listed: kept up to date from its events, in the same transaction."""

    id: str
    crew: str
    status: str
    input: str
    output: str | None = None
    error: str | None = None
    error_kind: str | None = None
    created: float
    updated: float
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    current_persona: str | None = None
    current_step: str | None = None
    last_seq: int = 0


class StoredEvent(BaseModel):
    """An event with the store's global, increasing ``id`` (readers resume from it)."""

    id: int
    event: BaseEvent


class RunStore(abc.ABC):
    """Append-only event log plus a per-run summary. Methods are synchronous and
    thread-safe; the async engine batches writes through :class:`~pilothouse.eventlog.EventLog`."""

    location: str = ""

    @abc.abstractmethod
    def write(self, events: Sequence[tuple[BaseEvent, str]]) -> None:
        """Append ``(event, event_json)`` pairs atomically: all are stored or none."""

    @abc.abstractmethod
    def list_runs(
        self, *, status: str | None = None, crew: str | None = None, limit: int = 100
    ) -> list[RunSummary]:
        """Runs, newest first, optionally filtered."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunSummary:
        """One run by id or unique id prefix; raise :class:`~pilothouse.errors.NotFound`."""

    @abc.abstractmethod
    def events(self, run_id: str, *, after_seq: int = 0) -> list[BaseEvent]:
        """The events of one run in order, those after ``after_seq`` only."""

    @abc.abstractmethod
    def events_since(self, after_id: int = 0, *, limit: int = 1000) -> list[StoredEvent]:
        """Events of every run after the global id ``after_id``: how readers follow the log."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's resources."""
