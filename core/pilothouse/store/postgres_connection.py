"""A PostgreSQL connection that rides out its server: it comes back after it was lost,
and it never waits on a silent server past a deadline.

A server restarted, failed over or cut off by the network leaves a connection that is
closed (psycopg notices at the next statement) or, worse, one that hangs: the packets
of a partition are dropped, nobody answers and nobody closes. Three things bound that:

- TCP keepalives and ``tcp_user_timeout`` on every connection, so the kernel gives up
  on a peer that stopped acknowledging;
- a deadline per statement (``store_timeout_s``) kept by a watchdog thread that shuts
  the socket down when a statement outlives it, which also catches a peer whose
  kernel still acknowledges (a proxy, a load balancer) while nothing answers;
- ``connect_timeout`` on every new connection.

A lost connection is replaced before the next statement, never inside a transaction
(the statements before the loss went with it: the transaction fails as a whole).
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import StoreError, StoreUnavailable
from ..settings import shown_url

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
except ImportError:  # the extra is missing: said where a URL asks for PostgreSQL
    psycopg = None  # type: ignore[assignment]

#: how long a new connection may take at most (less with a shorter ``store_timeout_s``)
CONNECT_TIMEOUT_S = 10
#: the default deadline of one statement (``store_timeout_s``)
STATEMENT_TIMEOUT_S = 15.0


def connection_params(url: str, timeout_s: float | None) -> dict[str, Any]:
    """libpq parameters for ``url`` with the timeouts that notice a dead peer added
    (those the URL sets itself win)."""
    params: dict[str, Any] = conninfo_to_dict(url)
    bound = timeout_s or STATEMENT_TIMEOUT_S
    defaults = {
        # libpq waits 2 s at the least
        "connect_timeout": max(2, min(CONNECT_TIMEOUT_S, int(bound))),
        "keepalives": 1,
        # an idle connection is probed after a third of the bound, then every sixth:
        # a peer that is gone is given up within about the bound
        "keepalives_idle": max(1, int(bound / 3)),
        "keepalives_interval": max(1, int(bound / 6)),
        "keepalives_count": 3,
        # data sent and not acknowledged for this long closes the connection
        "tcp_user_timeout": int(bound * 1000),
    }
    for key, value in defaults.items():
        params.setdefault(key, value)
    return params


def connect(url: str, timeout_s: float | None = STATEMENT_TIMEOUT_S) -> Any:
    """A psycopg connection (autocommit) to ``url``; a failure is a :class:`StoreError`
    whose one line names the cause and the fix."""
    shown = shown_url(url)
    if psycopg is None:
        raise StoreError(
            f"store_url names a PostgreSQL server ({shown}) but psycopg is not installed:"
            " pip install 'pilothouse[postgres]'"
        )
    try:
        return psycopg.connect(autocommit=True, **connection_params(url, timeout_s))
    except psycopg.OperationalError as exc:
        message = connect_failure(shown, str(exc))
        if _refused_for_now(str(exc)):
            raise StoreUnavailable(message) from None
        raise StoreError(message) from None
    except psycopg.Error as exc:
        text = " ".join(str(exc).split())
        raise StoreError(f"cannot connect to the run store {shown}: {text}") from None


def _refused_for_now(message: str) -> bool:
    """Whether a failed connection may succeed later as it is (the server down,
    starting, shutting down or silent), rather than needing a fix (a password, a user,
    a database name)."""
    text = message.lower()
    fixable = ("password" in text or "does not exist" in text or "permission" in text
               or "no pg_hba.conf entry" in text or "ssl" in text)  # fmt: skip
    return not fixable


def connect_failure(shown: str, message: str) -> str:
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
        return (f"cannot connect to PostgreSQL at {shown}: no answer in time (is the host"
                " reachable from here?)")  # fmt: skip
    return f"cannot connect to PostgreSQL at {shown}: {text}"


class Deadline:
    """Shuts a connection's socket down when a statement outlives ``seconds``: the
    blocked statement then fails at once as a lost connection.

    One thread per connection, started on first use; a statement only writes the time
    it must end by (no wake-up per statement while the thread already sleeps)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        #: statements cut off so far
        self.fired = 0
        self._cond = threading.Condition()
        self._until: float | None = None
        self._fd = -1
        self._idle = True
        self._closed = False
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def armed(self, fd: int) -> Iterator[None]:
        """Around one statement on the socket ``fd``."""
        if self.seconds is None:
            yield
            return
        with self._cond:
            self._until, self._fd = time.monotonic() + self.seconds, fd
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="pilothouse-pg-deadline", daemon=True
                )
                self._thread.start()
            elif self._idle:
                self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._until = None

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """No deadline inside (maintenance that may run long: VACUUM FULL)."""
        seconds, self.seconds = self.seconds, None
        try:
            yield
        finally:
            self.seconds = seconds

    def close(self) -> None:
        """Stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                if self._until is None:
                    self._idle = True
                    self._cond.wait()
                    self._idle = False
                    continue
                left = self._until - time.monotonic()
                if left > 0:
                    self._cond.wait(left)  # re-read: a later statement may have moved it
                    continue
                # In the lock: the statement cannot end and its socket be reused meanwhile.
                self._until = None
                self.fired += 1
                _shut(self._fd)


def _readable(fd: int) -> bool:
    """Whether the socket ``fd`` has something to read (or was closed by its peer) now."""
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _shut(fd: int) -> None:
    """Shut the socket ``fd`` down for both directions (the descriptor stays open: its
    owner closes it)."""
    with contextlib.suppress(OSError):
        peer = socket.socket(fileno=socket.dup(fd))
        try:
            peer.shutdown(socket.SHUT_RDWR)
        finally:
            peer.close()


class PgConnection:
    """The connection a PostgreSQL run store speaks through: the ``?`` placeholders the
    shared SQL is written with (psycopg's are ``%s``), the few calls
    :class:`~.sql.SQLRunStore` makes, a new connection after one was lost, and a
    deadline on every statement."""

    def __init__(self, url: str, conn: Any, *, timeout_s: float | None) -> None:
        self.url = url
        self.conn = conn
        self.timeout_s = timeout_s
        self.deadline = Deadline(timeout_s)
        #: new connections made after one was lost
        self.reconnects = 0
        self._sql: dict[str, str] = {}
        self._in_transaction = False
        self._shut = False

    def _convert(self, sql: str) -> str:
        converted = self._sql.get(sql)
        if converted is None:
            converted = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
        return converted

    def _ready(self) -> Any:
        """The live connection: a new one when it was lost outside a transaction.

        Outside a transaction the server has nothing to say unasked: a socket that can
        be read then holds its goodbye (a restart, a failover, an idle timeout), so the
        connection is replaced before a statement is lost on it (one poll, no round trip)."""
        conn = self.conn
        if not conn.closed and (self._in_transaction or not _readable(conn.pgconn.socket)):
            return conn
        if self._shut:  # closed by its owner: a late statement must not open a new one
            raise psycopg.OperationalError("the run store's connection was closed")
        if not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.close()
        if self._in_transaction:
            raise psycopg.OperationalError("the connection was lost in the middle of a transaction")
        # raises psycopg.OperationalError while the server cannot be reached
        conn = psycopg.connect(autocommit=True, **connection_params(self.url, self.timeout_s))
        self.conn = conn
        self.reconnects += 1
        return conn

    def execute(self, sql: str, args: Sequence[object] = ()) -> Any:
        """Run one statement; a transaction's BEGIN, COMMIT and ROLLBACK are followed."""
        conn = self._ready()
        word = sql[:8].upper()
        if word.startswith("BEGIN"):
            self._in_transaction = True
        try:
            with self.deadline.armed(conn.pgconn.socket):
                return conn.execute(self._convert(sql), args)
        finally:
            if word.startswith(("COMMIT", "ROLLBACK")):
                self._in_transaction = False

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> Any:
        """Run one statement for each row."""
        conn = self._ready()
        cursor = conn.cursor()
        with self.deadline.armed(conn.pgconn.socket):
            cursor.executemany(self._convert(sql), rows)
        return cursor

    def rollback(self) -> None:
        """End the transaction in progress; nothing to do on a lost connection."""
        self._in_transaction = False
        conn = self.conn
        if conn.closed or conn.broken:
            return
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection and stop its watchdog; no new connection is made after
        (a statement still on its way in another thread fails instead of leaking one)."""
        self._shut = True
        self.deadline.close()
        self.conn.close()
