"""Requests-per-minute and tokens-per-minute limits for one endpoint (token buckets)."""

from __future__ import annotations

import time

import anyio


class Bucket:
    """A token bucket refilled at ``per_minute / 60`` a second. It holds ten seconds'
    worth, so a burst at start-up cannot spend the whole minute at once."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = max(1.0, per_minute / 6)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.stamp = time.monotonic()
        self._lock: anyio.Lock | None = None

    async def take(self, amount: float) -> None:
        """Wait until ``amount`` is available, then take it (an amount over the
        capacity waits for a full bucket, so one large request still goes through)."""
        if self._lock is None:
            self._lock = anyio.Lock()
        amount = min(amount, self.capacity)
        async with self._lock:  # first come, first served
            while True:
                now = time.monotonic()
                self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.level >= amount:
                    self.level -= amount
                    return
                await anyio.sleep((amount - self.level) / self.rate)
