"""Which run store a workspace uses: the one place that picks a backend.

``store_url`` unset: the workspace's SQLite file (the embedded default); a
``postgresql://`` URL (any libpq form, ``?sslmode=...`` included): PostgreSQL. The
engine, the CLI, the monitor and the portal get a :class:`~.base.RunStore` from
here and never name a backend.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..settings import Settings, shown_url
from .base import RunStore


def store_location(settings: Settings) -> str | Path:
    """Where the run store is: its URL, or its SQLite file's path."""
    return settings.store_url or settings.store_path


def store_exists(settings: Settings) -> bool:
    """Whether there is a store to read: a server always has one (it is made on first
    use); a SQLite file only once a run was made."""
    return bool(settings.store_url) or settings.store_path.exists()


def is_url(location: str | Path) -> bool:
    """Whether a store location is a server's URL rather than a SQLite file's path."""
    return isinstance(location, str) and "://" in location


def open_location(
    location: str | Path, *, owner: str | None = None, timeout_s: float | None = None
) -> RunStore:
    """The run store at ``location``: a ``postgresql://`` URL or a SQLite file's path.

    :param timeout_s: a server's statement deadline (default: ``store_timeout_s``'s)
    """
    if is_url(location):
        from .postgres import SCHEMES, PostgresRunStore

        if not str(location).startswith(SCHEMES):
            raise ConfigError(
                f"store_url {shown_url(str(location))!r} is not a PostgreSQL URL: it starts"
                " with postgresql:// (unset it for the workspace's SQLite file)"
            )
        if timeout_s is None:
            return PostgresRunStore(str(location), owner=owner)
        return PostgresRunStore(str(location), owner=owner, timeout_s=timeout_s)
    from .sqlite import SQLiteRunStore

    return SQLiteRunStore(location, owner=owner)


def open_store(settings: Settings, *, owner: str | None = None) -> RunStore:
    """The run store ``settings`` name; raise :class:`~pilothouse.errors.StoreError`
    (one line: the cause and the fix) when it cannot be opened.

    :param owner: the lease holder written with the runs this handle starts
    """
    if settings.store_url:
        if "://" not in settings.store_url:
            raise ConfigError(
                f"store_url {shown_url(settings.store_url)!r} is not a URL: give"
                " postgresql://user:password@host/database"
            )
        return open_location(settings.store_url, owner=owner, timeout_s=settings.store_timeout_s)
    from .sqlite import SQLiteRunStore

    return SQLiteRunStore(
        settings.store_path, synchronous=settings.synchronous.upper(), owner=owner
    )
