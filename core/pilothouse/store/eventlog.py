"""The write path of the event log: observers, batching and group commit.

``emit`` is synchronous and cheap: it hands the event to the observers and
queues it. A background flusher commits whatever is queued as soon as the
event loop is free, merging the events of every concurrent run into one
transaction (group commit). ``await flush()`` is the durability barrier: the
engine awaits it before a step starts if another step finished since the last
flush, and when a run ends, so the engine never gets ahead of a finished step
in the log.

One commit is in flight at a time (:meth:`RunStore.commit`, awaited: a store over
the network waits for its round trip there without holding the event loop).
Whatever is emitted meanwhile goes into the next commit, which is how the runs
that are ready together share one transaction.

When the store cannot be reached (:class:`~pilothouse.errors.StoreUnavailable`: its
server down or silent, its file locked, its disk full), nothing is dropped: the
events stay queued and the flusher tries again with backoff, while the runs that
flush wait at their barrier, holding their finished steps (no model call is made
again). Once the outage has lasted ``outage_s``, a flush raises instead, and the
engine suspends the run; its events are still committed whenever the store answers.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from ..blocking import SLOW_ON_LOOP_S, report_held_loop
from ..errors import StoreError, StoreUnavailable
from ..events import BaseEvent, LogEntry, entry_of, fast_type, log_entry
from ..repeats import Repeats
from .base import RunStore

log = logging.getLogger("pilothouse.store.eventlog")

Observer = Callable[[BaseEvent], Any]
#: sees the entry of every event queued for the store (``pilothouse``'s own views)
Tap = Callable[[LogEntry], None]
#: the first and the longest wait between two attempts to commit to an unreachable
#: store (doubling in between, with jitter so that many workers do not knock at once)
RETRY_FIRST_S, RETRY_MAX_S = 0.05, 1.0


class EventLog:
    """Queues events for a :class:`RunStore` (or none) and fans them out to observers."""

    def __init__(self, store: RunStore | None, *, outage_s: float = 300.0) -> None:
        self.store = store
        #: how long a flush waits for an unreachable store before it raises
        self.outage_s = outage_s
        #: since when (``time.monotonic()``) commits fail because the store is unreachable
        self._failing_since: float | None = None
        self._attempts = 0
        #: the batch being committed now
        self._in_flight: list[LogEntry] = []
        self._observers: list[tuple[str, Observer, frozenset[str] | None]] = []
        self._taps: list[tuple[Tap, frozenset[str]]] = []
        #: the event types some observer wants typed (None in it: all of them)
        self._typed: set[str | None] = set()
        #: the failures of each observer, reported now and then
        self._failing = Repeats()
        self._pending: list[LogEntry] = []
        # Made only when someone waits (an anyio.Event costs more than the rest of an
        # emit): by a flush that waits for a commit, and by the flusher going idle.
        self._committed: anyio.Event | None = None
        self._wakeup: anyio.Event | None = None
        self._error: StoreError | None = None
        #: a commit is in flight (the next one waits for it: one at a time, in order)
        self._committing = False
        #: how many commits were made (see _let_others_write)
        self._writes = 0
        self._task_group: TaskGroup | None = None
        # Plain attributes, not properties: the engine asks several times per step.
        #: True when an event would go anywhere (a store or an observer): else the
        #: engine need not build it
        self.active = store is not None
        #: True when at least one observer listens (else unstored events need not be made)
        self.observed = False

    def subscribe(
        self, observer: Observer, *, name: str = "", types: frozenset[str] | None = None
    ) -> None:
        """Call ``observer(event)`` for every event (of ``types``, when given); it may
        return an awaitable."""
        name = name or getattr(observer, "__name__", "observer")
        self._observers.append((name, observer, types))
        self._typed.update(types if types is not None else {None})
        self.active = self.observed = True

    def tap(self, tap: Tap, types: frozenset[str]) -> None:
        """Call ``tap(entry)`` for the entry of every event of ``types`` queued for the
        store: what a view of the log in this process needs (no typed event is built
        for it)."""
        self._taps.append((tap, types))

    def record(
        self, event_type: type[BaseEvent], run_id: str, seq: int, ts: float, fields: dict[str, Any]
    ) -> None:
        """Record an event given as its fields: the engine's way. The typed event is
        built only when an observer wants it (or the store reads it whole); else its
        entry is made straight from the fields (:func:`~pilothouse.events.entry_of`)."""
        name = fast_type(event_type)
        typed = self._typed
        if name is None or self.store is None or (typed and (None in typed or name in typed)):
            self.emit(event_type(run_id=run_id, seq=seq, ts=ts, **fields))
            return
        self._queue(entry_of(event_type, run_id, seq, ts, fields))

    def emit(self, event: BaseEvent, *, persist: bool = True) -> None:
        """Record ``event``: queue it for the store and show it to the observers.

        ``persist=False`` shows it to observers only (streamed token deltas).
        """
        if persist and self.store is not None:
            self._queue(log_entry(event))
        t = event.type
        for name, observer, types in self._observers:
            if types is not None and t not in types:
                continue
            started = time.perf_counter()
            try:
                result = observer(event)
            except Exception as exc:  # an observer must never break a run
                self._observer_failed(name, exc)
                continue
            if time.perf_counter() - started >= SLOW_ON_LOOP_S:  # checked here: once per event
                report_held_loop(f"event observer {name}", started,
                                 "return an awaitable, or hand slow work to a thread")  # fmt: skip
            if result is not None and hasattr(result, "__await__"):
                self._start_soon(name, result)

    async def flush(self, *, alone: bool = False) -> None:
        """Wait until every event emitted so far is committed; raise :class:`StoreError`.

        ``alone``: the caller is the only run at work, so no other run's events are
        coming to share the commit; commit now instead of waiting for the flusher's turn.

        While the store is unreachable this waits (the flusher tries again with
        backoff) and raises :class:`StoreUnavailable` once the outage has lasted
        ``outage_s``; the events stay queued either way.
        """
        if self.store is None:
            return
        while self._pending:
            unreachable = isinstance(self._error, StoreUnavailable)
            if not self._committing and (self._task_group is None or (alone and not unreachable)):
                if unreachable:  # no flusher to try again: this caller does, in time
                    await self._back_off()
                await self._commit_pending()
            else:
                if self._committed is None:
                    self._committed = anyio.Event()
                committed = self._committed
                self._wake()  # after a failed commit the flusher sleeps until asked
                await committed.wait()
            error = self._error
            if error is None:
                return  # committed, this caller's events with it
            if not isinstance(error, StoreUnavailable):
                raise error
            if self.outage_over():
                raise StoreUnavailable(f"{error} (unreachable for {self.outage_s:g} s or more)")

    @property
    def unreachable(self) -> bool:
        """The last commit found the store unreachable (its events wait, queued)."""
        return isinstance(self._error, StoreUnavailable)

    def outage_over(self) -> bool:
        """The store has been unreachable for ``outage_s`` or more."""
        since = self._failing_since
        return since is not None and time.monotonic() - since >= self.outage_s

    def unwritten_runs(self) -> set[str]:
        """The runs that have events not committed yet (queued or being committed): a
        worker must not take them for stalled, their own events are on the way."""
        return {e.run_id for e in self._pending} | {e.run_id for e in self._in_flight}

    async def run_flusher(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """The background writer: run it in a task group for the log's lifetime."""
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            task_status.started()
            try:
                while True:
                    if (
                        self._pending
                        and isinstance(self._error, StoreUnavailable)
                        and not self._committing
                    ):
                        await self._back_off()
                        if not self._committing:
                            await self._commit_pending()
                        continue
                    if not self._pending or self._error is not None or self._committing:
                        wakeup = self._wakeup = anyio.Event()
                        await wakeup.wait()
                        await self._let_others_write()
                        if self._committing or not self._pending:
                            continue
                    await self._commit_pending()
            finally:
                self._task_group = None
                with anyio.CancelScope(shield=True):
                    if not self._committing:
                        await self._commit_pending()
                    if self._pending:
                        runs = ", ".join(sorted({e.run_id for e in self._pending}))
                        log.error(
                            "%d event(s) could not be written before this process stopped (%s):"
                            " runs %s go on from their last logged step when resumed",
                            len(self._pending), self._error, runs,
                        )  # fmt: skip

    async def _back_off(self) -> None:
        """Sleep before the next attempt at an unreachable store."""
        delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** min(self._attempts, 10))
        await anyio.sleep(delay * random.uniform(0.5, 1.0))

    async def _let_others_write(self) -> None:
        """Give the tasks ready now a turn before committing: their events share the
        commit. While a run alone at work commits at its own barriers meanwhile
        (``flush(alone=True)``), keep leaving the writing to it: the flusher commits
        once a turn of the loop passes without such a commit, so an event is never
        left waiting longer than the loop stays busy."""
        writes = -1
        while writes != self._writes:
            writes = self._writes
            await anyio.lowlevel.checkpoint()

    def _queue(self, entry: LogEntry) -> None:
        self._pending.append(entry)
        if self._wakeup is not None:
            self._wake()
        for tap, types in self._taps:
            if entry.type in types:
                tap(entry)

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            wakeup.set()

    async def _commit_pending(self) -> None:
        """Commit what is pending; then again while a flush waits for events that were
        queued during the commit (one commit in flight at a time keeps each run's
        events in order)."""
        self._committing = True
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                committed, self._committed = self._committed, None
                self._writes += 1
                error = None
                if self.store is not None:
                    self._in_flight = batch
                    try:
                        await self.store.commit(batch)
                    except StoreError as exc:
                        error = exc
                    finally:
                        self._in_flight = []
                self._done(batch, committed, error)
                if error is not None or self._committed is None:
                    break
        finally:
            self._committing = False
        if self._pending:
            self._wake()  # queued during the commit, with nobody waiting yet

    def _done(
        self,
        batch: list[LogEntry],
        committed: anyio.Event | None,
        error: StoreError | None,
    ) -> None:
        if error is not None:
            # Keep the batch so that a later flush retries it: nothing is dropped.
            self._pending[:0] = batch
            if isinstance(error, StoreUnavailable):
                # said by the store's health, once per outage: not once per retry here
                self._attempts += 1
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
            elif self._error is None or str(self._error) != str(error):  # once, not per retry
                log.error("%s", error)
        else:
            self._failing_since, self._attempts = None, 0
        self._error = error
        if committed is not None:
            committed.set()

    def _observer_failed(self, name: str, exc: Exception) -> None:
        """Report an observer's failure: the first with its traceback, then a count at
        most every ``repeats.REPEAT_S``."""
        count = self._failing.note(name)
        if count == 0:
            log.error("event observer %s raised; the run goes on", name, exc_info=exc)
        elif count is not None:
            log.error("event observer %s raised %d more times (the last: %s: %s)",
                      name, count, type(exc).__name__, exc)  # fmt: skip

    def _start_soon(self, name: str, awaitable: Any) -> None:
        async def guarded() -> None:
            try:
                await awaitable
            except Exception as exc:
                self._observer_failed(name, exc)

        if self._task_group is not None:
            self._task_group.start_soon(guarded)
        else:
            awaitable.close()
            log.warning("observer %s returned an awaitable outside a runtime; dropped", name)
