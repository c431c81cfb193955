"""Leases: which process executes an unfinished run, and whether it still does.

A process that executes runs writes its owner id (``host:pid:token``) on them and
refreshes a heartbeat. A run whose owner is gone is stalled: nothing will carry
it on until a worker (or ``pilothouse resume``) takes it over.
"""

from __future__ import annotations

import os
import socket
import uuid

#: a lease whose heartbeat is older than this is dead, wherever its process was
LEASE_S = 30.0
HOST = socket.gethostname()


def new_owner() -> str:
    """An owner id for this process: ``host:pid:token``."""
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def lease_alive(owner: str | None, heartbeat: float | None, now: float) -> bool:
    """Whether the process holding a run still runs it.

    On this host the process id answers at once (a killed runner's runs can be
    resumed immediately); elsewhere the heartbeat must be younger than LEASE_S.
    """
    if not owner or heartbeat is None or now - heartbeat > LEASE_S:
        return False
    host, _, rest = owner.partition(":")
    if host != HOST:
        return True
    try:
        os.kill(int(rest.split(":")[0]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True
