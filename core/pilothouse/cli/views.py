"""The monitor and the audit portal."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from .base import Context, cli, pass_context
from .decisions import _decider
from .viewing import _since


@cli.command()
@click.option("--serve", is_flag=True, help="Serve the monitor to a browser (textual-serve).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address --serve binds.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port --serve listens on.",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Let --serve bind an address other machines reach (it has no login).",
)
@click.option("--window", type=click.Choice(["15m", "1h", "24h", "7d"]), default="1h",
              show_default=True, help="Time window of the header's numbers.")  # fmt: skip
@pass_context
def tui(obj: Context, serve: bool, host: str, port: int, allow_remote: bool, window: str) -> None:
    """The monitor: live runs, exceptions and the escalation inbox (needs pilothouse[tui])."""
    try:
        from ..tui import Feed, MonitorApp
    except ImportError as exc:
        raise click.ClickException(
            f"the monitor needs Textual: pip install 'pilothouse[tui]' ({exc})"
        ) from exc
    settings = obj.settings
    if serve:
        if not _loopback(host):
            # whoever reaches it decides escalations and cancels runs, under this user's name
            if not allow_remote:
                raise click.UsageError(
                    f"--host {host} lets other machines reach the monitor, which has no"
                    " login and can approve, reject and cancel runs: put it behind an"
                    " authenticating proxy on 127.0.0.1, or pass --allow-remote"
                )
            click.secho(f"warning: the monitor on {host}:{port} has no login", err=True,
                        fg="yellow")  # fmt: skip
        try:
            from textual_serve.server import Server
        except ImportError as exc:
            raise click.ClickException(
                f"--serve needs textual-serve: pip install 'pilothouse[serve]' ({exc})"
            ) from exc
        import shlex

        command = shlex.join([sys.executable, "-m", "pilothouse", "--workspace",
                              str(settings.workspace), "tui", "--window", window])  # fmt: skip
        click.secho(f"monitor on http://{host}:{port} (ctrl+c stops)", err=True)
        with _listening(host, port):
            Server(command, host=host, port=port, title="pilothouse").serve()
        return
    from ..redact import Redactor
    from ..store.open import store_location

    # The header says "run store unreachable since ..." itself: a log line written to
    # the terminal under a full-screen app would only tear the screen.
    logging.getLogger("pilothouse.store").propagate = False
    app = MonitorApp(
        Feed(store_location(settings)),
        redact=Redactor.from_settings(settings),
        decider=_decider(obj, None),
        window=window,
    )
    app.run()


@cli.group()
def portal() -> None:
    """The audit portal: a static site made from the run log (needs pilothouse[portal])."""


def _portal_out(obj: Context, out: str | None) -> Path:
    return Path(out) if out else obj.settings.workspace / "portal"


_portal_folder = click.option(
    "--out", type=click.Path(file_okay=False), help="Folder (default <workspace>/portal)."
)


@portal.command("build")
@_portal_folder
@click.option("--since", help="Only runs since: 7d, 12h, 30m or an ISO date.")
@click.option("--no-html", is_flag=True, help="Write the Markdown and mkdocs.yml only.")
@click.option("--full", is_flag=True, help="Render every page again, not only the changed ones.")
@pass_context
def portal_build(
    obj: Context, out: str | None, since: str | None, no_html: bool, full: bool
) -> None:
    """Regenerate the pages of new and changed runs, then build the HTML."""
    from ..portal import Portal
    from ..redact import Redactor

    folder = _portal_out(obj, out)
    site = Portal(obj.store(), folder, redact=Redactor.from_settings(obj.settings),
                  since=_since(since))  # fmt: skip
    made = site.generate()
    click.secho(
        f"pages: {made.written} run pages written, {made.runs - made.written} unchanged,"
        f" {made.removed} removed ({made.seconds:.2f} s)",
        err=True,
    )
    if no_html:
        click.echo(folder / "docs")
        return
    seconds = site.build(full=full)
    click.secho(f"html: built in {seconds:.2f} s", err=True)
    click.echo(folder / "site" / "index.html")


@portal.command("serve")
@_portal_folder
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@pass_context
def portal_serve(obj: Context, out: str | None, host: str, port: int) -> None:
    """Serve the built portal (pilothouse portal build first)."""
    import functools
    import http.server

    site = _portal_out(obj, out) / "site"
    if not (site / "index.html").exists():
        raise click.ClickException(f"no portal built in {site}: run 'pilothouse portal build'")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    with _listening(host, port), http.server.ThreadingHTTPServer((host, port), handler) as server:
        click.secho(f"portal on http://{host}:{port}/ (ctrl+c stops)", err=True)
        server.serve_forever()


def _loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


@contextlib.contextmanager
def _listening(host: str, port: int) -> Iterator[None]:
    """A port that cannot be listened on (in use, not allowed) is the user's error to
    fix, not a traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (choose another --port)"
        ) from None
