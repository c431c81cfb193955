"""Streamed model text, shared with other processes while the call is in flight.

Token deltas are not events (a reply of 500 tokens would be 500 rows in the
log); :class:`LiveText` keeps the text of each call in flight and writes it to
the store a few times a second, so a monitor in another process can show a
reply as it arrives. The row goes away when the call's ``model_call`` event
is written, in the same transaction.
"""

from __future__ import annotations

import logging

import anyio

from ..errors import StoreError
from ..events import FINAL_EVENTS, BaseEvent, LogEntry
from .base import RunStore

log = logging.getLogger("pilothouse.store.live")


class LiveText:
    """Observer of ``model_delta`` events that publishes them to a run store."""

    #: the events after which a call's streamed text is no longer shown: its own
    #: logged call, or its run's end
    SETTLED_BY = frozenset({"model_call", *FINAL_EVENTS})

    def __init__(self, store: RunStore, interval: float = 0.25) -> None:
        self.store = store
        self.interval = interval
        #: the pieces streamed so far per call (joined when published: a reply of n
        #: pieces is not copied n times)
        self._text: dict[tuple[str, str], list[str]] = {}
        self._dirty: set[tuple[str, str]] = set()

    def delta(self, event: BaseEvent) -> None:
        """Collect a piece of streamed text (an observer of ``model_delta`` events)."""
        key = (event.run_id, event.step_id or "")
        self._text.setdefault(key, []).append(event.text)  # type: ignore[attr-defined]
        self._dirty.add(key)

    def written(self, entry: LogEntry) -> None:
        """Forget a call once it is logged, and every call of a run once the run ends (a
        call cut off by a cancellation or a timeout is never logged); the store drops
        their rows with the event (a tap of the event log)."""
        t = entry.type
        if t == "model_call":
            self._forget((entry.run_id, entry.step_id or ""))
        elif t in FINAL_EVENTS and self._text:
            for key in [key for key in self._text if key[0] == entry.run_id]:
                self._forget(key)

    def _forget(self, key: tuple[str, str]) -> None:
        self._text.pop(key, None)
        self._dirty.discard(key)

    async def run(self) -> None:
        """Publish what changed every ``interval`` seconds.

        The write happens on the event loop (a few rows, like the event log's
        own commits): a call logged meanwhile has already been forgotten, so
        its row is never written back after the store deleted it.
        """
        while True:
            await anyio.sleep(self.interval)
            if not self._dirty:
                continue
            items = [(run, step, "".join(self._text[(run, step)])) for run, step in self._dirty]
            self._dirty.clear()
            try:
                self.store.put_live(items)
            except StoreError as exc:  # only the live view suffers; the log is intact
                log.warning("%s", exc)
