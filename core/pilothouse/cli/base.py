"""What every command shares: the group, its context and the exit codes."""

from __future__ import annotations

import logging
import sys
from enum import IntEnum

import click

from ..settings import Settings, load_settings
from ..store.base import RunStore
from ..store.open import open_store, store_exists

DEMO_INPUT = (
    "Plan the launch campaign for the Helio 30 solar backpack: day hikers who need their"
    " phone charged on the trail"
)


class Exit(IntEnum):
    """What the command's exit status means."""

    OK = 0
    RUN_FAILED = 1
    USAGE = 2
    CONFIG = 3
    LIMIT = 4
    BLOCKED = 5
    STORE = 6
    INTERRUPTED = 130


class Context:
    """What every command shares: settings, loaded once."""

    def __init__(self, workspace: str | None) -> None:
        self.workspace = workspace
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The effective settings (loaded on first use, so --help stays fast)."""
        if self._settings is None:
            self._settings = load_settings(workspace=self.workspace)
        return self._settings

    def store(self) -> RunStore:
        """The workspace's run store; a clear error when no run was made yet."""
        if not store_exists(self.settings):
            raise click.ClickException(
                f"no run store at {self.settings.store_path}: no run has been made in this"
                " workspace yet (try 'pilothouse demo')"
            )
        return open_store(self.settings)


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--workspace",
    "-w",
    envvar="PILOTHOUSE_WORKSPACE",
    help="Workspace folder (default .pilothouse).",
)
@click.version_option(package_name="pilothouse")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None) -> None:
    """pilothouse: run fleets of LLM agents and watch them from the pilothouse."""
    logging.basicConfig(level=logging.WARNING, format="pilothouse: %(message)s", stream=sys.stderr)
    ctx.obj = Context(workspace)
