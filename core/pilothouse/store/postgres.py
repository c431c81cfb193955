"""The run store on PostgreSQL: one database for many workers on many machines.

What it does is :class:`~.sql.SQLRunStore`'s; here is how it connects (psycopg 3, the
``postgres`` extra, through :mod:`.postgres_connection`, which rides out a lost
connection and a silent server), says a connection failure in one line, numbers runs (an identity
column: many writers at once), locks what a read-then-write reads (``FOR UPDATE``)
and lets workers claim queued runs side by side (``FOR UPDATE SKIP LOCKED``). Its
schema: :mod:`.postgres_migrations`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.to_thread

from ..errors import StoreError, StoreUnavailable
from ..events import LogEntry
from ..settings import shown_url
from .base import Listener
from .health import StoreHealth
from .postgres_connection import STATEMENT_TIMEOUT_S, PgConnection, connect, connection_params
from .sql import START_RUN, SQLRunStore

try:
    import psycopg
except ImportError:  # the extra is missing: said where a URL asks for PostgreSQL
    psycopg = None  # type: ignore[assignment]

#: the URL schemes that name a PostgreSQL server
SCHEMES = ("postgresql://", "postgres://")


class PostgresRunStore(SQLRunStore):
    """A :class:`~pilothouse.RunStore` in a PostgreSQL database (``store_url``)."""

    _errors = (psycopg.Error,) if psycopg is not None else ()
    _unsure_commits = True
    _begin = "BEGIN"
    _start_run = START_RUN.format(number="", next_number="")  # numbered by the identity
    _for_update = " FOR UPDATE"
    _skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(
        self, url: str, *, owner: str | None = None, timeout_s: float | None = STATEMENT_TIMEOUT_S
    ) -> None:
        super().__init__(shown_url(url), owner=owner)
        self._url = url
        self._timeout_s = timeout_s
        conn = connect(url, timeout_s)
        try:
            from .postgres_migrations import migrate

            migrate(conn)
        except psycopg.Error as exc:
            conn.close()
            text = " ".join(str(exc).split())
            if "permission denied" in text:
                raise StoreError(
                    f"the user of {self.location} may not create the run store's tables"
                    f" ({text}): grant it CREATE on the database's schema, or let an owner"
                    " open the store once"
                ) from None
            raise StoreError(f"cannot set up the run store in {self.location}: {text}") from None
        self._db = PgConnection(url, conn, timeout_s=timeout_s)

    def _transient(self, exc: Exception) -> bool:
        # a lost or refused connection, a server shutting down or starting, a statement
        # cut off by its deadline, a full disk, too many connections: all of them
        # OperationalError (SQLSTATE classes 08, 53, 57)
        return isinstance(exc, psycopg.OperationalError) or bool(self._db.conn.broken)

    def _json_field(self, column: str, key: str) -> str:
        return f"({column}::jsonb ->> '{key}')"

    def _announce(self, channel: str) -> None:
        # delivered when the transaction commits (at once outside one)
        self._db.execute("SELECT pg_notify(?, '')", (f"pilothouse_{channel}",))

    def listener(self) -> Listener:
        """LISTEN on the store's channels, on a connection of its own."""
        return _PgListener(self._url, self.health, self._timeout_s)

    def _json_doc(self, column: str) -> str:
        return f"{column}::jsonb"

    def _json_get(self, doc: str, path: str, number: bool) -> str:
        value = f"({doc} #>> '{{{path.replace('.', ',')}}}')"
        return f"{value}::float8" if number else value

    def _prefix(self, column: str, key: str) -> tuple[str, tuple[object, ...]]:
        return f"starts_with({column}, ?)", (key,)

    async def commit(self, entries: Sequence[LogEntry]) -> None:
        """Commit in a worker thread: the event loop never waits for the round trip,
        and the commit completes or fails as a whole if the caller is cancelled."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.write, entries)

    def size(self) -> int:
        """Bytes the database takes on disk."""
        return self._query("SELECT pg_database_size(current_database())")[0][0]

    def vacuum(self) -> tuple[int, int]:
        """Give the space of deleted rows back (VACUUM FULL of the store's tables);
        return the database's size before and after."""
        before = self.size()
        try:
            with self._lock, self._db.deadline.suspended():
                for table in ("events", "runs", "escalations", "live_text"):
                    self._db.execute(f"VACUUM FULL {table}")
        except psycopg.Error as exc:
            raise StoreError(f"cannot vacuum the run store {self.location}: {exc}") from exc
        return before, self.size()


class _PgListener(Listener):
    """LISTEN/NOTIFY on an async connection of its own (it never holds the event loop).

    A lost connection is made again at the next wait, LISTEN included; a connection or
    a LISTEN that takes longer than the store's statement deadline counts as lost."""

    def __init__(self, url: str, health: StoreHealth, timeout_s: float | None) -> None:
        self.url = url
        self.health = health
        self.timeout_s = timeout_s
        self._conn: Any = None
        #: the store's recoveries when the connection was made (None: none made)
        self._connected_at: int | None = None

    async def wait(self, timeout: float) -> set[str]:
        try:
            if self._conn is None:
                with anyio.fail_after(self.timeout_s or STATEMENT_TIMEOUT_S):
                    conn = await psycopg.AsyncConnection.connect(
                        autocommit=True, **connection_params(self.url, self.timeout_s)
                    )
                    self._conn = conn
                    self._connected_at = self.health.recoveries
                    for channel in self.CHANNELS:
                        await conn.execute(f"LISTEN pilothouse_{channel}")
                # (the store is said to answer again by its own statements, not by this
                # connection: a listener back before them would make the outage flap)
            heard = set()
            async for notice in self._conn.notifies(timeout=timeout, stop_after=1):
                heard.add(notice.channel.removeprefix("pilothouse_"))
            return heard
        except (psycopg.Error, TimeoutError) as exc:
            connected_at = self._connected_at
            await self.aclose()  # the next wait connects again
            text = " ".join(str(exc).split()) or "no answer in time"
            self.health.failed(text, connected_at=connected_at)
            raise StoreUnavailable(
                f"cannot listen to the run store {shown_url(self.url)}: {text}"
            ) from exc

    async def aclose(self) -> None:
        self._connected_at = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(psycopg.Error):
                await conn.close()
