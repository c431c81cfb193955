"""Plugin code that blocks (sync tools, embedders), run in daemon threads.

``anyio.to_thread`` threads are not daemons, and a thread cannot be stopped. So a
tool stuck in a blocking call that its run gave up on (a timeout, a cancel) kept
the process alive at exit until the call returned: ``pilothouse run`` printed
"the run took longer than 3 s" and then hung for as long as the tool did. It also
held one of anyio's 40 thread tokens, which the store's own threaded work shares.
Here each call gets a daemon thread of its own; a caller that is cancelled stops
waiting at once, and the thread finishes (or not) without holding anything.

Plugin code declared quick runs on the event loop instead (a guardrail's sync
``check``, a ``blocking=False`` tool, an event observer). When it is not quick,
every run in the process stands still meanwhile; :func:`report_held_loop` says so.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

from .repeats import Repeats

T = TypeVar("T")

log = logging.getLogger("pilothouse.blocking")

#: sync plugin code that holds the event loop this long is reported (the first time
#: in full, then with a count at most every repeats.REPEAT_S)
SLOW_ON_LOOP_S = 0.1
_reported = Repeats()

#: at most this many blocking calls run at once; the others wait their turn
MAX_THREADS = 64

# one per event loop (a limiter belongs to the loop that made it)
_limiter: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("pilothouse_threads")


def _threads() -> anyio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(MAX_THREADS)
        _limiter.set(limiter)
        return limiter


async def run_blocking(func: Callable[[], T], *, name: str = "blocking call") -> T:
    """Run ``func()`` in a daemon thread and return its result (or raise its error).

    Cancelling the caller returns at once and leaves the thread to finish alone:
    its result is dropped, and it neither keeps the process alive at exit nor
    counts against ``MAX_THREADS`` any longer. ``name`` names the thread (for a
    stack dump of a hung process).
    """
    token = anyio.lowlevel.current_token()
    done = anyio.Event()
    outcome: list[tuple[bool, object]] = []
    context = contextvars.copy_context()

    def work() -> None:
        try:
            outcome.append((True, context.run(func)))
        except BaseException as exc:  # handed to the caller, who re-raises it
            outcome.append((False, exc))
        # The event loop may be gone already (the run was abandoned and the
        # process is ending): then nobody waits for this result.
        with contextlib.suppress(Exception):
            anyio.from_thread.run_sync(done.set, token=token)

    async with _threads():
        threading.Thread(target=work, name=f"pilothouse: {name}", daemon=True).start()
        await done.wait()
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[return-value]
    raise value  # type: ignore[misc]


def report_held_loop(name: str, started: float, fix: str) -> None:
    """Warn when sync plugin code that ran on the event loop since ``started`` (a
    ``time.perf_counter()``) held it ``SLOW_ON_LOOP_S`` or more: no other run moved
    meanwhile. ``fix`` says how to move that code off the loop. Each ``name`` is
    reported in full once, then with a count now and then."""
    held = time.perf_counter() - started
    if held < SLOW_ON_LOOP_S:
        return
    count = _reported.note(name)
    if count == 0:
        log.warning(
            "%s held the event loop for %.2f s, and every other run waited; %s", name, held, fix
        )
    elif count is not None:
        log.warning("%s held the event loop again, %d time(s) since it was last reported"
                    " (%.2f s this time)", name, count, held)  # fmt: skip
