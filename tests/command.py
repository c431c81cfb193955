"""``pilothouse`` run as users run it: a child process, with no ``PILOTHOUSE_*`` variable
of the test session's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def ph(
    *args: str,
    cwd: Path | str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pilothouse ARGS`` in ``cwd``; its exit status and output."""
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("PILOTHOUSE_")}
    return subprocess.run(
        [sys.executable, "-m", "pilothouse", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **(env or {})},
        input=stdin,
        timeout=timeout,
    )
