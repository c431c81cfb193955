"""A PostgreSQL that tests can take away and bring back, and a TCP proxy that can go
silent: the parts of the outage tests (tests/test_outage.py) and bench/bench_outage.py.

:class:`RestartablePostgres` is the pgserver wheel's PostgreSQL 16 on a data folder of
its own, listening on 127.0.0.1 at a fixed port, so that an immediate shutdown (a
crash, a failover) and a start on the same address are one call each.
:class:`SilentProxy` forwards a loopback port to it and can stop forwarding without
closing anything: a partition as a client sees it, where nobody answers and nobody
hangs up.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on now, on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RestartablePostgres:
    """A private PostgreSQL server that can be stopped hard and started again."""

    def __init__(self, options: str = "") -> None:
        import warnings

        #: more server options (``-c name=value``)
        self.options = options

        os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="pilothouse-xdg-"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
        from pgserver._commands import pg_ctl

        self._pg_ctl = pg_ctl
        self.folder = Path(tempfile.mkdtemp(prefix="pilothouse-pg-outage-"))
        # pgserver makes the data folder (initdb as its own user when run as root) and
        # starts a server on a socket; it is stopped and started again on TCP here
        server = pgserver.get_server(self.folder, cleanup_mode=None)
        self.pgdata, self.user = server.pgdata, server.system_user
        pg_ctl(["-w", "stop"], pgdata=self.pgdata, user=self.user, timeout=60)
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def start(self) -> None:
        """Start the server on its address; return once it accepts connections."""
        options = f"-h 127.0.0.1 -p {self.port} -k '' {self.options}".strip()
        log = str(self.pgdata / "server.log")
        self._pg_ctl(["-w", "-o", options, "-l", log, "start"], pgdata=self.pgdata,
                     user=self.user, timeout=60)  # fmt: skip

    def crash(self) -> None:
        """Stop the server at once, as a crash or a failover does (no clean shutdown:
        open connections are cut, transactions in flight are lost)."""
        self._pg_ctl(["-m", "immediate", "-w", "stop"], pgdata=self.pgdata, user=self.user,
                     timeout=60)  # fmt: skip

    def database(self) -> str:
        """A fresh, empty database on the server: its URL."""
        import uuid

        import psycopg

        name = f"t{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url.removesuffix("/postgres") + f"/{name}"

    def close(self) -> None:
        """Stop the server and delete its folder."""
        import shutil

        with contextlib.suppress(Exception):
            self.crash()
        shutil.rmtree(self.folder, ignore_errors=True)


class SilentProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; :meth:`silence` stops forwarding in
    both directions without closing a connection (new ones are accepted and then get
    nothing), :meth:`speak` forwards again, what was held included."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        #: replies stop here once the client sent this (see lose_reply_to)
        self._marker: bytes | None = None
        self._replies = threading.Event()
        self._replies.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="silent-proxy").start()

    def silence(self) -> None:
        """Stop forwarding: packets are taken in and go nowhere."""
        self._open.clear()

    def speak(self) -> None:
        """Forward again."""
        self._marker = None
        self._replies.set()
        self._open.set()

    def lose_reply_to(self, marker: bytes) -> None:
        """Forward the next request that contains ``marker`` (the server acts on it) and
        hold every reply from then on: a commit whose answer is lost with the network."""
        self._marker = marker

    def url(self, database_url: str) -> str:
        """``database_url`` with this proxy's port instead of the server's."""
        return database_url.replace(f":{self.target_port}/", f":{self.port}/")

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._closed = True
        self._open.set()
        for s in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._open.wait()  # a silent network does not connect anything either
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            for a, b, upstream in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(a, b, upstream), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            self._open.wait()
            if not upstream:
                self._replies.wait()
            try:
                sink.sendall(data)
            except OSError:
                return
            if upstream and self._marker is not None and self._marker in data:
                self._replies.clear()
