"""Reports of a fault that keeps happening: the first in full, then a count now and then.

A broken exporter fails on every event, a blocking tool holds the loop on every
call: a report each time would bury the log, and one report only would fall silent
in a worker that runs for weeks.
"""

from __future__ import annotations

import time

#: a fault reported before is reported again at most this often
REPEAT_S = 60.0


class Repeats:
    """Counts the occurrences of faults by key, to say when each is worth a report."""

    def __init__(self) -> None:
        #: key -> [occurrences since the last report, when that was (monotonic)]
        self._seen: dict[str, list[float]] = {}

    def note(self, key: str) -> int | None:
        """Count one occurrence of ``key``. Returns 0 the first time (report it in full),
        the occurrences since the last report once ``REPEAT_S`` has passed since it
        (report that count), else None (say nothing)."""
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = [0, now]
            return 0
        seen[0] += 1
        if now - seen[1] < REPEAT_S:
            return None
        count = int(seen[0])
        seen[:] = [0, now]
        return count
