"""The run store on PostgreSQL: one database for many workers on many machines.

What it does is :class:`~.sql.SQLRunStore`'s; here is how it connects (psycopg 3, the
``postgres`` extra), says a connection failure in one line, numbers runs (an identity
column: many writers at once), locks what a read-then-write reads (``FOR UPDATE``)
and lets workers claim queued runs side by side (``FOR UPDATE SKIP LOCKED``). Its
schema: :mod:`.postgres_migrations`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.to_thread

from ..errors import StoreError
from ..events import LogEntry
from ..settings import shown_url
from .base import Listener
from .sql import START_RUN, SQLRunStore

try:
    import psycopg
except ImportError:  # the extra is missing: said where a URL asks for PostgreSQL
    psycopg = None  # type: ignore[assignment]

#: the URL schemes that name a PostgreSQL server
SCHEMES = ("postgresql://", "postgres://")


class _Connection:
    """A psycopg connection that takes the ``?`` placeholders the shared SQL is written
    with (psycopg's are ``%s``), and the few calls :class:`SQLRunStore` makes."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self._sql: dict[str, str] = {}

    def _convert(self, sql: str) -> str:
        converted = self._sql.get(sql)
        if converted is None:
            converted = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return converted

    def execute(self, sql: str, args: Sequence[object] = ()) -> Any:
        return self.conn.execute(self._convert(sql), args)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> Any:
        cursor = self.conn.cursor()
        cursor.executemany(self._convert(sql), rows)
        return cursor

    def rollback(self) -> None:
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


class PostgresRunStore(SQLRunStore):
    """A :class:`~pilothouse.RunStore` in a PostgreSQL database (``store_url``)."""

    _errors = (psycopg.Error,) if psycopg is not None else ()
    _begin = "BEGIN"
    _start_run = START_RUN.format(number="", next_number="")  # numbered by the identity
    _for_update = " FOR UPDATE"
    _skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, *, owner: str | None = None) -> None:
        super().__init__(shown_url(url), owner=owner)
        self._url = url
        conn = connect(url)
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
        self._db = _Connection(conn)

    def _json_field(self, column: str, key: str) -> str:
        return f"({column}::jsonb ->> '{key}')"

    def _announce(self, channel: str) -> None:
        # delivered when the transaction commits (at once outside one)
        self._db.execute("SELECT pg_notify(?, '')", (f"pilothouse_{channel}",))

    def listener(self) -> Listener:
        """LISTEN on the store's channels, on a connection of its own."""
        return _PgListener(self._url)

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
            with self._lock:
                for table in ("events", "runs", "escalations", "live_text"):
                    self._db.execute(f"VACUUM FULL {table}")
        except psycopg.Error as exc:
            raise StoreError(f"cannot vacuum the run store {self.location}: {exc}") from exc
        return before, self.size()


class _PgListener(Listener):
    """LISTEN/NOTIFY on an async connection of its own (it never holds the event loop)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None

    async def wait(self, timeout: float) -> set[str]:
        try:
            if self._conn is None:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=10
                )
                for channel in self.CHANNELS:
                    await self._conn.execute(f"LISTEN pilothouse_{channel}")
            heard = set()
            async for notice in self._conn.notifies(timeout=timeout, stop_after=1):
                heard.add(notice.channel.removeprefix("pilothouse_"))
            return heard
        except psycopg.Error as exc:
            await self.aclose()  # the next wait connects again
            raise StoreError(
                f"cannot listen to the run store {shown_url(self.url)}: {exc}"
            ) from exc

    async def aclose(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()


def connect(url: str) -> Any:
    """A psycopg connection (autocommit) to ``url``; a failure is a :class:`StoreError`
    whose one line names the cause and the fix."""
    shown = shown_url(url)
    if psycopg is None:
        raise StoreError(
            f"store_url names a PostgreSQL server ({shown}) but psycopg is not installed:"
            " pip install 'pilothouse[postgres]'"
        )
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise StoreError(_connect_failure(shown, str(exc))) from None
    except psycopg.Error as exc:
        text = " ".join(str(exc).split())
        raise StoreError(f"cannot connect to the run store {shown}: {text}") from None


def _connect_failure(shown: str, message: str) -> str:
    """What went wrong connecting, in one line, with what to do about it."""
    text = " ".join(message.split())
    if "password authentication failed" in text or "no password supplied" in text:
        user = re.search(r'for user "([^"]+)"', text)
        who = f" as {user.group(1)}" if user else ""
        return (f"PostgreSQL refused the login{who} at {shown}: the password is wrong or"
                " missing (check store_url)")  # fmt: skip
    if "role" in text and "does not exist" in text:
        return f"PostgreSQL has no such user at {shown}: check the user in store_url"
    if "does not exist" in text and "database" in text:
        return (f"the database in {shown} does not exist: create it (createdb) or name"
                " another in store_url")  # fmt: skip
    if "Connection refused" in text or "No such file or directory" in text:
        return (f"cannot connect to PostgreSQL at {shown}: nothing listens there (is the"
                " server running, and are the host and port right?)")  # fmt: skip
    if "timeout" in text.lower():
        return f"cannot connect to PostgreSQL at {shown}: no answer within 10 s"
    return f"cannot connect to PostgreSQL at {shown}: {text}"
