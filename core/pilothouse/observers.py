"""Event observers that a plugin registers with the settings and a lifecycle: exporters.

A plain ``on_event`` hook sees every event and nothing else. An exporter (traces to
an OpenTelemetry backend, say) also needs the settings to know where to send, the run
store to read a run's whole log, and a moment to flush when the runtime closes: it is
an :class:`EventObserver`, registered through ``register_observers``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any


class EventObserver(abc.ABC):
    """Sees the events of every run of a runtime; subclass it and register it through
    ``register_observers`` (see :mod:`pilothouse.hookspecs`)."""

    #: the name ``pilothouse plugins`` lists it under
    name: str = ""
    #: the event types it wants (None: every type); fewer types cost the engine less
    types: frozenset[str] | None = None
    #: model requests carry the W3C ``traceparent`` of their call's span while it is
    #: registered (a tracing exporter: :mod:`pilothouse.tracing`)
    propagates: bool = False

    @abc.abstractmethod
    def __call__(self, event: Any) -> Any:
        """Called in the event loop for each event: return quickly, or return an
        awaitable for slow work. An exception is logged once with the plugin's name and
        never reaches the run."""

    def open(self, store: Any) -> None:
        """Called once before the first run, with the runtime's run store (None when it
        logs nothing): an observer that reads a run's whole log keeps it."""
        return None

    def export(self, events: Sequence[Any]) -> int | None:
        """Send a run that is already in the log, given as its events in order
        (``pilothouse export NAME``): return what was sent (spans, rows...), or None
        for an observer that only watches live runs."""
        return None

    def describe(self) -> str:
        """One line for ``pilothouse plugins`` and ``pilothouse config``: what it does
        and where it sends (never a secret)."""
        return ""

    async def aclose(self) -> None:
        """Called when the runtime closes: send what is pending, within a bound."""
        return None
