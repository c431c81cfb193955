"""A watch on the event loop: code that holds it stops every run in the process.

One badly behaved plugin (an ``async`` tool that calls ``time.sleep`` or a blocking
HTTP client, a retriever stuck on a lock) freezes the whole fleet, and from the
outside the process only looks idle. A task on the loop notes the time every
``INTERVAL_S``; a thread checks that note. When the loop has not come back for
``HELD_S``, the thread reads where the loop's thread is (its Python stack) and
logs it, while the loop is still held: a loop that never comes back is found too.
It reports a place only when it finds the loop there twice in a row: a turn of
the loop that is merely long (a thousand runs each doing a little) is busy at a
different place each time it looks, and is not one piece of code's fault. A place
reported before is reported again at most every ``repeats.REPEAT_S``, with how often it
held the loop meanwhile (a worker that runs for weeks still says so).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback

import anyio

from ..repeats import Repeats

log = logging.getLogger("pilothouse.engine.watchdog")

#: how often the loop's task notes the time, and the thread looks at the note
INTERVAL_S = 0.1
#: the loop held this long is reported
HELD_S = 1.0
#: the frames of the loop's stack that a report shows (the innermost ones)
FRAMES = 4


class LoopWatchdog:
    """Reports, while it happens, an event loop held by code that does not yield."""

    def __init__(self) -> None:
        self._beat = time.monotonic()
        self._loop_thread = threading.get_ident()
        self._stopping = threading.Event()
        #: the stalls found at each place, reported now and then
        self._reported = Repeats()

    async def run(self) -> None:
        """Note the time on the loop until cancelled; a thread does the watching."""
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        watcher = threading.Thread(target=self._watch, name="pilothouse-watchdog", daemon=True)
        watcher.start()
        try:
            while True:
                self._beat = time.monotonic()
                await anyio.sleep(INTERVAL_S)
        finally:
            self._stopping.set()

    def _watch(self) -> None:
        reported_beat = None
        seen: tuple[float, str] | None = None  # (stall, place) of the last look
        while not self._stopping.wait(INTERVAL_S):
            beat = self._beat
            held = time.monotonic() - beat
            if held < HELD_S or beat == reported_beat:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)[-FRAMES:]
            if not stack or stack[-1].filename.endswith("selectors.py"):
                continue  # idle, waiting for I/O: it was late (a suspended process), not held
            place = f"{stack[-1].filename}:{stack[-1].lineno}"
            if seen != (beat, place):  # look again before blaming this place
                seen = (beat, place)
                continue
            reported_beat = beat  # one report per stall
            count = self._reported.note(place)
            if count is None:
                continue
            if count:
                log.warning("the event loop was held again in %s: %d time(s) since it was"
                            " last reported", place, count)  # fmt: skip
                continue
            where = " <- ".join(f"{f.name} ({f.filename}:{f.lineno})" for f in reversed(stack))
            log.warning(
                "the event loop has been held for %.1f s, and no run moves meanwhile;"
                " it is in %s. Code that blocks belongs in a thread"
                " (pilothouse.run_blocking, or a sync tool without blocking=False).",
                held,
                where,
            )
