"""Whether the run store answers, as this process last found it.

A store handle notes every failure that leaves the store unreachable for now (its
server down or silent, the connection lost, the file locked beyond the busy timeout,
the disk full) and the first operation that succeeds after one. The change is said
once each way in the log (``pilothouse.store``), so an operator reads one line when
the store goes away and one when it is back, with how long it was gone; the monitor
shows "run store unreachable since ..."; an exporter counts outages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("pilothouse.store")

#: ``callback(down, seconds)``: ``down`` True when the store was just found
#: unreachable (``seconds`` None), False when it answers again (``seconds``: how long
#: it was away)
HealthCallback = Callable[[bool, float | None], None]


class StoreHealth:
    """Outages of one store as one process sees them."""

    def __init__(self, location: str) -> None:
        #: the store, as messages name it (no password)
        self.location = location
        #: when the current outage began (``time.time()``), None while the store answers
        self.down_since: float | None = None
        #: what the current outage's first failure said
        self.cause = ""
        #: outages seen since the handle opened
        self.outages = 0
        #: outages that ended: a connection made before the last of them ended can
        #: only tell of that outage when it fails (see :meth:`failed`)
        self.recoveries = 0
        self._lock = threading.Lock()
        self._callbacks: list[HealthCallback] = []

    @property
    def down(self) -> bool:
        """The last operation found the store unreachable."""
        return self.down_since is not None

    def subscribe(self, callback: HealthCallback) -> None:
        """Call ``callback(down, seconds)`` at each change (from the thread that saw it)."""
        self._callbacks.append(callback)

    def failed(self, cause: str, *, connected_at: int | None = None) -> None:
        """An operation found the store unreachable: the first of an outage is said.

        ``connected_at``: the :attr:`recoveries` when the failing connection was made;
        one made before the last recovery is a stale connection finding out late about
        an outage that is over (a listener waiting on its socket), not a new outage."""
        with self._lock:
            if connected_at is not None and connected_at < self.recoveries:
                return
            if self.down_since is not None:
                return
            self.down_since, self.cause = time.time(), cause
            self.outages += 1
        log.warning(
            "run store %s unreachable: %s; runs keep their finished steps and try again",
            self.location, cause,
        )  # fmt: skip
        self._tell(True, None)

    def answered(self) -> None:
        """An operation succeeded: the end of an outage, if one was going on, is said."""
        if self.down_since is None:  # the usual case: one attribute read per operation
            return
        with self._lock:
            since, self.down_since = self.down_since, None
            if since is not None:
                self.recoveries += 1
        if since is None:
            return
        away = time.time() - since
        log.warning("run store %s reachable again after %.1f s", self.location, away)
        self._tell(False, away)

    def describe(self) -> str:
        """One line for a view: empty while the store answers."""
        if self.down_since is None:
            return ""
        when = time.strftime("%H:%M:%S", time.localtime(self.down_since))
        return f"run store unreachable since {when} ({self.cause})"

    def _tell(self, down: bool, seconds: float | None) -> None:
        for callback in self._callbacks:
            try:
                callback(down, seconds)
            except Exception:  # a view's callback must never break the store
                log.exception("store health callback %r raised", callback)
