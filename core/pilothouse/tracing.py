"""Trace ids derived from the run log, and the W3C ``traceparent`` of the model call in
progress.

Every process that exports a run (the one that ran it, the one that resumed it after a
crash, ``pilothouse export``) derives the same ids from the run's log, so a run is one
trace and each logged thing one span. A model call's span id comes from the call id the
engine gives it before the call, so the request can carry its ``traceparent`` and a
model server that traces (vLLM does) joins the run's trace.
"""

from __future__ import annotations

import contextvars
import hashlib

#: (run id, call id) of the model call in progress, when an exporter propagates traces
_call: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "pilothouse_call", default=None
)


def trace_id(run_id: str) -> int:
    """The 128-bit trace id of a run."""
    return int.from_bytes(hashlib.sha256(f"trace:{run_id}".encode()).digest()[:16], "big") or 1


def span_id(run_id: str, key: str) -> int:
    """The 64-bit id of the span ``key`` of a run: ``run``, ``step:<seq>``,
    ``call:<call id>``, ``event:<seq>``."""
    return int.from_bytes(hashlib.sha256(f"{run_id}:{key}".encode()).digest()[:8], "big") or 1


def enter_call(run_id: str, call_id: str) -> contextvars.Token:
    """Mark a model call in progress (the engine's; undo with :func:`leave_call`)."""
    return _call.set((run_id, call_id))


def leave_call(token: contextvars.Token) -> None:
    """The model call is over."""
    _call.reset(token)


def traceparent() -> str | None:
    """The W3C ``traceparent`` header of the model call in progress, or None (no call,
    or no exporter that propagates): what a provider adds to its request."""
    current = _call.get()
    if current is None:
        return None
    run_id, call_id = current
    return f"00-{trace_id(run_id):032x}-{span_id(run_id, f'call:{call_id}'):016x}-01"
