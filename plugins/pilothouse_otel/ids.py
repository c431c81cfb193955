"""Trace and span ids derived from the run log, so every process that exports a run
(the one that ran it, the one that resumed it, ``pilothouse export otlp``) names its
trace and spans alike: one trace per run, one span per logged thing, never two."""

from __future__ import annotations

import hashlib


def trace_id(run_id: str) -> int:
    """The 128-bit trace id of a run."""
    return int.from_bytes(hashlib.sha256(f"trace:{run_id}".encode()).digest()[:16], "big") or 1


def span_id(run_id: str, key: str) -> int:
    """The 64-bit id of the span ``key`` (``run``, ``step:<seq>``, ``event:<seq>``) of a run."""
    return int.from_bytes(hashlib.sha256(f"{run_id}:{key}".encode()).digest()[:8], "big") or 1
