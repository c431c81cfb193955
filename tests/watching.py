"""Driving the monitor in tests: wait for what the app shows, read its widgets as text."""

from __future__ import annotations

import os
import time

from textual.widgets import DataTable, Static

from pilothouse.tui import Feed, MonitorApp


async def until(pilot, condition, timeout: float = 30.0, what: str = "condition") -> None:
    """Let the app run until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def rendered(widget: Static) -> str:
    """The plain text a Static holds (Rich renderables printed without styles)."""
    from rich.console import Console

    content = widget.content
    if isinstance(content, str):
        return content
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(content)
    console.file.close()
    return console.export_text()


def table_text(table: DataTable) -> str:
    """Every cell of a table as plain text, rows on lines."""
    return "\n".join(
        " ".join(str(cell) for cell in table.get_row_at(i)) for i in range(table.row_count)
    )


def monitor(path, **kwargs) -> MonitorApp:
    """The monitor app on a store file, polling fast and deciding at once."""
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("undo_s", 0)  # a decision is recorded at the next tick
    return MonitorApp(Feed(path), **kwargs)
