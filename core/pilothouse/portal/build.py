"""``pilothouse portal build``: run store -> Markdown pages + mkdocs.yml -> static HTML.

The generator's output is plain Markdown and one configuration file, so the
HTML builder (mkdocs-material today) can be swapped. Builds are incremental on
the Markdown side: a run's page is written again only when the run has new
events since the last build (its ``last_seq`` moved); the overview pages come
from digests kept in ``state.json``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..audits.metrics import Metrics, compute_groupings
from ..errors import PortalError
from ..store.base import RunStore, RunSummary
from . import mkbuild
from .audit_pages import AuditPages
from .digest import RunDigest, digest
from .markdown import Redact
from .pages import Overview
from .paths import crew_path, hour_of, rel, run_path
from .run_html import EXCLUDE, TEMPLATE, template_markdown
from .run_page import run_page

#: bumped whenever a page is drawn differently, so that every page is made again (5:
#: escalations drawn as decisions: marks, word diff, sources, choices)
STATE_VERSION = 5
NAV = [
    {"Home": "index.md"},
    {"Runs": "runs/index.md"},
    {"Escalations": "escalations.md"},
    {"Failures": "failures.md"},
    {"Crews": "crews/index.md"},
    {"Personas": "personas/index.md"},
    {"Audits": "audits/index.md"},
]


@dataclass
class Generated:
    """What a generation did."""

    runs: int
    written: int
    removed: int
    seconds: float


class Portal:
    """The audit portal of one run store, generated into ``out``.

    ``out/docs`` holds the Markdown, ``out/mkdocs.yml`` the configuration,
    ``out/site`` the built HTML and ``out/state.json`` what the last build saw.
    """

    def __init__(
        self,
        store: RunStore,
        out: str | Path,
        *,
        redact: Redact = str,
        title: str = "pilothouse audit portal",
        since: float | None = None,
        max_runs: int = 1_000_000,
    ) -> None:
        self.store = store
        self.out = Path(out)
        self.docs = self.out / "docs"
        self.site = self.out / "site"
        self.redact = redact
        self.title = title
        self.since = since
        self.max_runs = max_runs

    # -- Markdown --------------------------------------------------------------------

    def generate(self) -> Generated:
        """Write the pages of new and changed runs, the overview pages and mkdocs.yml."""
        if importlib.util.find_spec("mkdocs") is None:
            raise PortalError("the portal needs mkdocs-material: pip install 'pilothouse[portal]'")
        started = time.perf_counter()
        state = self._load_state()
        known: dict[str, Any] = state["runs"]
        runs = self.store.list_runs(limit=self.max_runs)
        if self.since is not None:
            runs = [r for r in runs if r.created >= self.since]
        digests: dict[str, RunDigest] = {}
        run_dir = self.docs / "runs"
        present = {entry.name for entry in os.scandir(run_dir)} if run_dir.exists() else set()
        changed: list[RunSummary] = []
        kept: dict[str, dict[str, Any]] = {}  # the state's entries, unchanged runs' as they were
        for run in runs:
            seen = known.get(run.id)
            if seen and seen["last_seq"] == run.last_seq and f"{run.id}.md" in present:
                digests[run.id] = RunDigest.model_validate_json(seen["digest"])
                kept[run.id] = seen
                continue
            events = self.store.events(run.id)
            page = self.docs / run_path(run.id)
            self._write(page, run_page(run, events, self.redact, crew_page=_crew_link(run.crew)))
            made = digests[run.id] = digest(run, events)
            kept[run.id] = {"last_seq": run.last_seq, "created": run.created,
                            "digest": made.model_dump_json()}  # fmt: skip
            changed.append(run)
        gone = set(known) - set(digests)
        for run_id in gone:
            (self.docs / run_path(run_id)).unlink(missing_ok=True)
        # An hour's page lists that hour's runs: only the hours that gained, changed
        # or lost a run are written again.
        hours = {hour_of(r.created) for r in changed}
        hours |= {hour_of(known[r]["created"]) for r in gone}
        overview = Overview(digests.values(), self.redact, self.title, ops=self._ops())
        pages = overview.pages(hours=None if not state["pages"] else hours)
        audits = AuditPages(self.store.audits(), self.redact, set(digests))
        pages |= audits.pages()
        pages[TEMPLATE] = template_markdown()
        wanted = set(overview.paths()) | set(audits.paths()) | {run_path(r) for r in digests}
        wanted.add(TEMPLATE)
        for stale in set(state["pages"]) - wanted:
            (self.docs / stale).unlink(missing_ok=True)  # a crew, persona or hour now empty
        for path, text in pages.items():
            self._write(self.docs / path, text)
        self._write_assets()
        self._write_config()
        state["runs"] = kept
        state["pages"] = sorted(wanted - {run_path(r) for r in digests})
        self._save_state(state)
        elapsed = time.perf_counter() - started
        return Generated(len(digests), len(changed), len(gone), elapsed)

    def _ops(self) -> dict[str, list[Metrics]]:
        """The LLM-ops numbers by crew and by model, as ``pilothouse metrics`` computes them."""
        return dict(compute_groupings(self.store, ("crew", "model"), since=self.since))

    def _write(self, path: Path, text: str) -> None:
        """Write ``text`` unless the file already holds it (its mtime then stays)."""
        if path.exists() and path.read_text(encoding="utf-8") == text:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)

    def _write_assets(self) -> None:
        css = resources.files("pilothouse.portal").joinpath("pilothouse.css").read_text()
        self._write(self.docs / "assets" / "pilothouse.css", css)

    def _write_config(self) -> None:
        """mkdocs.yml: the shared base plus this portal's name, folders and navigation."""
        import yaml  # comes with mkdocs, the portal's extra

        base = yaml.safe_load(resources.files("pilothouse.portal").joinpath("base.yml").read_text())
        config = {
            "site_name": self.title,
            "docs_dir": "docs",
            "site_dir": "site",
            **base,
            "nav": NAV,
            "extra_css": ["assets/pilothouse.css"],
            # run pages are reached through the index pages, not the navigation, and
            # filled in from a template page rather than rendered by mkdocs one by one
            "validation": {"nav": {"omitted_files": "ignore"}, "anchors": "warn"},
            "exclude_docs": EXCLUDE,
        }
        self._write(self.out / "mkdocs.yml", yaml.safe_dump(config, sort_keys=False))

    def _load_state(self) -> dict[str, Any]:
        path = self.out / "state.json"
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return {"version": STATE_VERSION, "runs": {}, "pages": []}
        if state.get("version") != STATE_VERSION:
            return {"version": STATE_VERSION, "runs": {}, "pages": []}
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        tmp = self.out / "state.json.tmp"
        tmp.write_text(json.dumps(state, separators=(",", ":")))
        tmp.replace(self.out / "state.json")

    # -- HTML ------------------------------------------------------------------------

    def build(self, *, full: bool = False) -> float:
        """Build the HTML into ``out/site`` (strict: any warning fails it); return seconds.

        Only the pages whose Markdown changed are rendered again, unless ``full``
        is set or the configuration or the builder changed since the last build.
        """
        if importlib.util.find_spec("mkdocs") is None:
            raise PortalError("the portal needs mkdocs-material: pip install 'pilothouse[portal]'")
        started = time.perf_counter()
        stamp = self.site / ".pilothouse-build"
        fingerprint = self._fingerprint()
        changed_only = (
            not full
            and (self.site / "index.html").exists()
            and stamp.exists()
            and stamp.read_text() == fingerprint
        )
        mkbuild.build(self.out / "mkdocs.yml", changed_only=changed_only)
        stamp.write_text(fingerprint)
        return time.perf_counter() - started

    def _fingerprint(self) -> str:
        """What a changed-only build relies on staying the same: config and builder."""
        from importlib.metadata import version

        parts = [(self.out / "mkdocs.yml").read_text()]
        for package in ("pilothouse", "mkdocs", "mkdocs-material"):
            try:
                parts.append(f"{package} {version(package)}")
            except Exception:  # not installed as a distribution (a source checkout)
                parts.append(f"{package} ?")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _crew_link(crew: str) -> str:
    """The link from a run page to its crew's page (run pages are HTML: to the .html)."""
    return rel(run_path("x"), crew_path(crew)).removesuffix(".md") + ".html"
