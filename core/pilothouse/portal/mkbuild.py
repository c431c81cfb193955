"""Run mkdocs on a generated portal: full, or only the pages that changed.

A full build is ``mkdocs build --strict``. With ``--changed-only`` mkdocs'
dirty mode renders only the Markdown files newer than their HTML (the
generator leaves unchanged pages untouched), and the search index, which a
dirty build writes for the rendered pages alone, is merged back with the
previous one. This is safe for the portal because its navigation never
changes between builds (run pages are not in it); mkdocs' own warning about
dirty builds is about sites whose navigation does. Then the run pages are
filled in from the template page mkdocs built
(:mod:`pilothouse.portal.run_html`), and the index is written once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import PortalError
from .run_html import RunPages, is_run_page


class _DirtyNotice(logging.Filter):
    """Drops mkdocs' generic warning about dirty builds (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "'dirty' build" not in record.getMessage()


class _Problems(logging.Handler):
    """Keeps mkdocs' warnings and errors, to say why a strict build stopped."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.getMessage()}")


_DIRTY_NOTICE = _DirtyNotice()


def _page_of(location: str) -> str:
    return location.split("#", 1)[0]


def merge_search_index(old: dict, new: dict, site: Path) -> dict:
    """``new``'s entries, plus ``old``'s for pages that were not rebuilt and still exist
    (run pages are left to :class:`~pilothouse.portal.run_html.RunPages`)."""
    rebuilt = {_page_of(doc["location"]) for doc in new.get("docs", [])}
    exists: dict[str, bool] = {}

    def kept(doc: dict) -> bool:
        page = _page_of(doc["location"]) or "index.html"
        if page in rebuilt:
            return False
        if is_run_page(page):
            return True
        if page not in exists:
            exists[page] = (site / page).is_file()
        return exists[page]

    return {**new, "docs": [doc for doc in old.get("docs", []) if kept(doc)] + new.get("docs", [])}


def build(config_file: str | Path, *, changed_only: bool) -> None:
    """Build the site of ``config_file`` strictly; raise :class:`PortalError` with
    mkdocs' warnings when it stops."""
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config

    problems = _Problems()
    logger = logging.getLogger("mkdocs")
    logger.addHandler(problems)
    logging.getLogger("mkdocs.commands.build").addFilter(_DIRTY_NOTICE)
    try:
        config = load_config(str(config_file), strict=True)
        site = Path(config.site_dir)
        index_file = site / "search" / "search_index.json"
        old = json.loads(index_file.read_text()) if changed_only and index_file.exists() else None
        mkdocs_build(config, dirty=changed_only)
    except Exception as exc:  # mkdocs' Abort, BuildError, a config error...
        said = "\n".join(problems.messages[-20:])
        raise PortalError(f"mkdocs build failed: {exc}\n{said}".strip()) from exc
    finally:
        logger.removeHandler(problems)
    index = json.loads(index_file.read_text())
    if old is not None:
        index = merge_search_index(old, index, site)
    runs = RunPages(Path(config.docs_dir), site)
    runs.render(index, full=not changed_only)
    index_file.write_text(json.dumps(index, separators=(",", ":")))
