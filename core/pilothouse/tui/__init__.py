"""The monitor: a Textual app over the run store (``pip install 'pilothouse[tui]'``)."""

from .app import MonitorApp
from .feed import Feed, RunFilter

__all__ = ["Feed", "MonitorApp", "RunFilter"]
