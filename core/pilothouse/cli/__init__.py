"""The ``pilothouse`` command: a thin layer over :class:`pilothouse.Runtime` and the run store.

Exit codes: 0 success; 1 the run failed; 2 bad usage; 3 bad config, crew
file, plugin or unknown name; 4 a limit of the crew stopped the run; 5 a
guardrail blocked the run; 6 the run store cannot be opened or written (a full
disk, a file that is not a database); 130 interrupted.
"""

from __future__ import annotations

import sys

import click

from ..errors import PilothouseError, StoreError
from . import (  # noqa: F401  (they register the commands)
    audits,
    decisions,
    exporting,
    running,
    scaffold,
    viewing,
    views,
    workspace,
)
from .base import DEMO_INPUT, Exit, cli

__all__ = ["DEMO_INPUT", "Exit", "cli", "main"]


def main() -> None:
    """Entry point of the ``pilothouse`` script: errors become messages and exit codes."""
    unloaded = add_plugin_commands() if _wants_plugin_commands(sys.argv[1:]) else None
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(Exit.INTERRUPTED)
    except click.ClickException as exc:
        if (
            unloaded is not None
            and isinstance(exc, click.UsageError)
            and "No such command" in (exc.message)
        ):
            # the command may be a plugin's, which broken settings kept from loading
            click.secho(f"error: {unloaded} (plugins' commands need the settings)", fg="red",
                        err=True)  # fmt: skip
            sys.exit(Exit.CONFIG)
        exc.show()
        sys.exit(Exit.USAGE if isinstance(exc, click.UsageError) else Exit.CONFIG)
    except PilothouseError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(Exit.STORE if isinstance(exc, StoreError) else Exit.CONFIG)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(Exit.INTERRUPTED)


def _wants_plugin_commands(args: list[str]) -> bool:
    """Whether the command line may name a command a plugin adds: it names none of the
    built-in ones (or asks for help). A built-in command does not pay for importing
    every plugin to find out."""
    words = iter(args)
    for word in words:
        if word in ("-w", "--workspace"):
            next(words, None)
        elif not word.startswith("-"):
            return word not in cli.commands
    return True


def add_plugin_commands() -> PilothouseError | None:
    """Let every plugin add its commands (``register_commands``) to ``pilothouse``; a
    plugin that fails here is reported by the commands that load plugins, not here.
    Settings that cannot be read are returned (no plugin command was added)."""
    import logging

    from ..plugins import Plugins
    from ..settings import load_settings

    try:
        plugins = Plugins(load_settings())
    except PilothouseError as exc:  # a built-in command says what is wrong with them
        return exc
    quiet = logging.getLogger("pilothouse.plugins")
    level, quiet.level = quiet.level, logging.ERROR + 1
    try:
        plugins.load()
        plugins.load_commands(cli)
    finally:
        quiet.level = level
    return None
