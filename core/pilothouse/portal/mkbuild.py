"""Run mkdocs on a generated portal: full, or only the pages that changed.

``python -m pilothouse.portal.mkbuild CONFIG [--changed-only]``

A full build is ``mkdocs build --strict``. With ``--changed-only`` mkdocs'
dirty mode renders only the Markdown files newer than their HTML (the
generator leaves unchanged pages untouched), and the search index, which a
dirty build writes for the rendered pages alone, is merged back with the
previous one. This is safe for the portal because its navigation never
changes between builds (run pages are not in it); mkdocs' own warning about
dirty builds is about sites whose navigation does.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path


class _DirtyNotice(logging.Filter):
    """Drops mkdocs' generic warning about dirty builds (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "'dirty' build" not in record.getMessage()


def _page_of(location: str) -> str:
    return location.split("#", 1)[0]


def merge_search_index(old: dict, new: dict, site: Path) -> dict:
    """``new``'s entries, plus ``old``'s for pages that were not rebuilt and still exist."""
    rebuilt = {_page_of(doc["location"]) for doc in new.get("docs", [])}
    existing = {path.relative_to(site).as_posix() for path in site.rglob("*.html")}
    kept = [
        doc for doc in old.get("docs", [])
        if _page_of(doc["location"]) not in rebuilt
        and (_page_of(doc["location"]) or "index.html") in existing
    ]  # fmt: skip
    return {**new, "docs": kept + new.get("docs", [])}


def build(config_file: str, *, changed_only: bool) -> None:
    """Build the site of ``config_file`` strictly (raises on any warning)."""
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config

    config = load_config(config_file, strict=True)
    site = Path(config.site_dir)
    index = site / "search" / "search_index.json"
    old = json.loads(index.read_text()) if changed_only and index.exists() else None
    logging.getLogger("mkdocs.commands.build").addFilter(_DirtyNotice())
    mkdocs_build(config, dirty=changed_only)
    if old is not None and index.exists():
        index.write_text(json.dumps(merge_search_index(old, json.loads(index.read_text()), site)))


def main() -> None:
    """Command line entry (the portal runs it in a subprocess of its own)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = sys.argv[1:]
    build(args[0], changed_only="--changed-only" in args)


if __name__ == "__main__":
    main()
