"""Where each page of the portal lives, and how one page links to another."""

from __future__ import annotations

import hashlib
import posixpath
import re
import time

from ..events import RUN_ID


def slug(name: str) -> str:
    """A file name for a crew or persona: readable, and unique even for names that
    differ only in characters a file name cannot hold."""
    readable = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "x"
    return f"{readable}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


def run_path(run_id: str) -> str:
    """Where a run's page lives in the docs folder (an id that is not a plain file
    name, which the engine refuses but another writer of the log might not, gets a
    slug: no id can place a page outside the folder)."""
    name = run_id if RUN_ID.fullmatch(run_id) else slug(run_id)
    return f"runs/{name}.md"


def crew_path(crew: str) -> str:
    """Where a crew's page lives."""
    return f"crews/{slug(crew)}.md"


def persona_path(crew: str, persona: str) -> str:
    """Where a persona's page lives (personas belong to a crew)."""
    return f"personas/{slug(crew + '/' + persona)}.md"


def day_path(day: str) -> str:
    """The page listing one day's hours."""
    return f"runs/days/{day}.md"


def hour_path(hour: str) -> str:
    """The page listing one hour's runs (``YYYY-MM-DDTHH``): pages stay small however
    busy the fleet, and a new run changes only its hour's page."""
    return f"runs/hours/{hour}.md"


def rel(source: str, target: str) -> str:
    """A link from page ``source`` to page ``target`` (both docs-relative, no ``..``)."""
    source_dir = posixpath.dirname(source)
    if not source_dir:
        return target
    if posixpath.dirname(target) == source_dir:
        return posixpath.basename(target)
    return "../" * (source_dir.count("/") + 1) + target


def day_of(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def hour_of(ts: float) -> str:
    """The hour a timestamp falls in, as its page names it (``YYYY-MM-DDTHH``, UTC)."""
    return time.strftime("%Y-%m-%dT%H", time.gmtime(ts))
