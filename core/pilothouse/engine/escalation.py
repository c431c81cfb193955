"""Waiting for people: the runner's side of human-on-the-loop decisions.

It also carries cancel requests (``pilothouse cancel``) to the runs executing
in this process. A paused step registers its escalation with the :class:`DecisionWatcher` and
sleeps. One watcher task per runtime asks the run store, a few times a second
and only while something waits, which of the waiting escalations have been
decided (by ``pilothouse approve`` in another terminal, the monitor, or any
process sharing the store) and wakes those steps. Nothing busy-polls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import anyio.to_thread

from ..crew import EscalationRules
from ..errors import DecisionError, StoreError, StoreUnavailable
from ..repeats import Repeats
from ..store.base import Escalation, Listener, RunStore

log = logging.getLogger("pilothouse.engine.escalation")

POLICY_DECIDER = "policy:timeout"


class DecisionWatcher:
    """Wakes paused steps when their escalation is decided."""

    def __init__(
        self,
        store: RunStore,
        *,
        interval: float = 0.25,
        quiet_s: float = 5.0,
        on_cancel: Callable[[str, str], object] | None = None,
        active: Callable[[], list[str]] | None = None,
    ) -> None:
        self.store = store
        self.interval = interval
        #: with a store that announces decisions: how long to wait for one before
        #: asking the store anyway
        self.quiet_s = quiet_s
        #: ``on_cancel(run_id, reason)`` for runs cancelled from another process
        self.on_cancel = on_cancel
        self.active = active
        self._faults = Repeats()
        self._waiting: dict[str, anyio.Event] = {}
        self._decided: dict[str, Escalation] = {}

    async def wait(self, escalation_id: str, rules: EscalationRules) -> Escalation:
        """The decision on ``escalation_id``; the crew's timeout policy decides if nobody does."""
        event = anyio.Event()
        self._waiting[escalation_id] = event
        try:
            timeout = None if rules.on_timeout == "wait" else rules.timeout_s
            with anyio.move_on_after(timeout):
                await event.wait()
                return self._decided.pop(escalation_id)
            try:
                return self.store.decide(
                    escalation_id,
                    rules.on_timeout,
                    by=POLICY_DECIDER,
                    note=f"no decision within {rules.timeout_s:g} s",
                )
            except DecisionError:  # a person decided in the same instant: theirs stands
                return self.store.get_escalation(escalation_id)
        finally:
            self._waiting.pop(escalation_id, None)
            self._decided.pop(escalation_id, None)

    async def run(self) -> None:
        """The loop; run it in the runtime's task group. Where the store announces
        decisions and cancel requests (PostgreSQL's NOTIFY), it waits for those and
        asks the store only then (and every ``quiet_s`` in case a notice was lost);
        elsewhere it asks every ``interval``."""
        listener = self.store.listener()
        try:
            while True:
                await self._next(listener)
                await self._check()
        finally:
            if listener is not None:
                with anyio.CancelScope(shield=True):
                    await listener.aclose()

    async def _next(self, listener: Listener | None) -> None:
        """Until there may be news."""
        if listener is None:
            await anyio.sleep(self.interval)
            return
        try:
            await listener.wait(self.quiet_s)
        except StoreError as exc:  # the server away: ask it again soon
            self._fault("listen", exc)
            await anyio.sleep(self.interval)

    def _fault(self, doing: str, exc: StoreError) -> None:
        """Say a failure now and then; an unreachable store is said by its health, once
        per outage."""
        if isinstance(exc, StoreUnavailable):
            return
        count = self._faults.note(doing)
        if count is not None:
            again = f" ({count} more time(s))" if count else ""
            log.warning("%s%s; asking the run store every %g s meanwhile", exc, again,
                        self.interval)  # fmt: skip

    async def _check(self) -> None:
        """Carry the cancel requests and decisions the store holds to the runs here (a
        store that does not answer now is asked again at the next turn)."""
        try:
            await self._carry()
        except StoreError as exc:
            self._fault("check", exc)

    async def _carry(self) -> None:
        running = self.active() if self.active is not None else []
        if running and self.on_cancel is not None:
            for run_id in await anyio.to_thread.run_sync(self.store.cancel_requested, running):
                self.on_cancel(run_id, "cancelled by request")
        if not self._waiting:
            return
        ids = list(self._waiting)
        for escalation in await anyio.to_thread.run_sync(self.store.decided_among, ids):
            event = self._waiting.get(escalation.id)
            if event is not None:
                self._decided[escalation.id] = escalation
                event.set()
