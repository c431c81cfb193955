"""The portal builder's fast path for run pages: the theme's page, filled in.

A portal has one page per run and a few hundred others. mkdocs renders the
others, plus one template page (``runs/_page.md``) whose title and body are
placeholders; every run page is that template with the run's title and its
HTML body (the raw HTML block of its Markdown file) pasted in, and its search
entries (title, input, output) added to the theme's search index. Run pages
all live in ``runs/``, as the template does, so its relative links hold for
each of them. The Markdown files stay complete pages, so another builder can
render them the slow way.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from pathlib import Path

from ..errors import PortalError
from .run_page import BODY

TEMPLATE = "runs/_page.md"
TITLE = "@@PH-TITLE@@"
H1 = "@@PH-H1@@"
BODY_MARK = "<p>@@PH-BODY@@</p>"
#: a heading of the template, so that the theme draws a table of contents: its one
#: entry is the pattern of each run's entries, the heading itself is removed
TOC = "@@PH-TOC@@"
#: the run pages' Markdown files not to hand to mkdocs (gitignore patterns)
EXCLUDE = "/runs/*.md\n!/runs/index.md\n!/runs/_page.md\n"
STAMP = ".pilothouse-runs"
#: pages of ``runs/`` that mkdocs renders
NOT_RUNS = ("index", "_page")

_TAGS = re.compile(r"<[^>]+>")
_TOC_HEADING = re.compile(r'<h2 id="ph-toc">.*?</h2>\s*', re.S)
_TOC_ITEM = re.compile(r'<li class="md-nav__item">\s*<a href="#ph-toc".*?</li>', re.S)
_HEADINGS = re.compile(r'<h([23]) id="([^"]+)">(.*?)</h\1>')
_BLOCK = re.compile(r'<div class="ph-text" data-ph="(input|output)">(.*?)</div>', re.S)


def template_markdown() -> str:
    """The template page's Markdown: placeholders for the title and the body."""
    return "\n".join(
        [
            "---",
            f'title: "{TITLE}"',
            "search:",
            "  exclude: true",
            "---",
            "",
            f"# {H1}",
            "",
            f"## {TOC}",
            "",
            BODY_MARK.removeprefix("<p>").removesuffix("</p>"),
            "",
        ]
    )


class RunPages:
    """Fills the template in for the run pages whose Markdown is newer than their HTML."""

    def __init__(self, docs: Path, site: Path) -> None:
        self.docs = docs / "runs"
        self.site = site / "runs"

    def render(self, index: dict, *, full: bool) -> None:
        """Write the HTML of new and changed runs (all when ``full`` or the template changed),
        remove that of runs gone, and update the search ``index`` (the theme's) to match."""
        built = self.site / "_page.html"
        try:
            template = built.read_text(encoding="utf-8")
        except OSError as exc:
            raise PortalError(f"mkdocs did not build the run page template: {exc}") from exc
        if template.count(BODY_MARK) != 1:
            raise PortalError(f"the run page template {built} lost its body placeholder")
        digest = hashlib.sha256(template.encode()).hexdigest()
        stamp = self.site.parent / STAMP
        full = full or not stamp.exists() or stamp.read_text() != digest
        head, tail = template.split(BODY_MARK)
        head = _TOC_HEADING.sub("", head, count=1)
        item = _TOC_ITEM.search(head)
        toc_before, toc_after = (head[: item.start()], head[item.end() :]) if item else (head, "")
        sources = {
            entry.name[:-3]: entry
            for entry in os.scandir(self.docs)
            if entry.name.endswith(".md") and entry.name[:-3] not in NOT_RUNS
        }
        pages = {
            entry.name[:-5]: entry
            for entry in os.scandir(self.site)
            if entry.name.endswith(".html") and entry.name[:-5] not in NOT_RUNS
        }
        changed = [
            run_id
            for run_id, source in sources.items()
            if full
            or run_id not in pages
            or source.stat().st_mtime_ns > pages[run_id].stat().st_mtime_ns
        ]
        entries: list[dict[str, str]] = []
        for run_id in changed:
            title, body = _read(Path(sources[run_id].path))
            h1 = f"Run {html.escape(run_id)}"
            toc = _toc(item.group(0), body) if item else ""
            # filled parts first, then the run's text: no placeholder inside it is touched
            page = "".join(
                [_fill(toc_before, title, h1), toc, _fill(toc_after, title, h1), body,
                 _fill(tail, title, h1)]
            )  # fmt: skip
            (self.site / f"{run_id}.html").write_text(page, encoding="utf-8")
            entries += _search_entries(run_id, h1, body)
        gone = [run_id for run_id in pages if run_id not in sources]
        for run_id in gone:
            (self.site / f"{run_id}.html").unlink(missing_ok=True)
        built.unlink()  # not a page of the portal; mkdocs makes it again next time
        replaced = set(changed) | set(gone)
        index["docs"] = [
            doc for doc in index.get("docs", [])
            if not (is_run_page(doc["location"]) and _run_of(doc["location"]) in replaced)
        ] + entries  # fmt: skip
        stamp.write_text(digest)


def is_run_page(location: str) -> bool:
    """Whether a site location (``runs/<id>.html[#anchor]``) is a run's page."""
    if not location.startswith("runs/") or "/" in location[5:]:
        return False
    return _run_of(location) not in NOT_RUNS


def _run_of(location: str) -> str:
    return location.removeprefix("runs/").split("#", 1)[0].removesuffix(".html")


def _toc(pattern: str, body: str) -> str:
    """The run's table of contents: the template's entry, once per heading of the body."""
    return "".join(
        pattern.replace('href="#ph-toc"', f'href="#{anchor}"').replace(TOC, label)
        for _, anchor, label in _HEADINGS.findall(body)
    )


def _fill(part: str, title: str, h1: str) -> str:
    return part.replace(TITLE, title).replace(H1, h1)


def _read(path: Path) -> tuple[str, str]:
    """A run page's title (escaped) and HTML body, from its Markdown file."""
    text = path.read_text(encoding="utf-8")
    start = text.find(f'<div class="{BODY}">')
    if not text.startswith("---\ntitle: ") or start < 0:
        raise PortalError(f"{path} is not a run page the portal wrote")
    title = json.loads(text[len("---\ntitle: ") : text.index("\n", 11)])
    return html.escape(title), text[start:]


def _search_entries(run_id: str, h1: str, body: str) -> list[dict[str, str]]:
    """The run's entries in the search index: the page (its status line), input, output."""
    location = f"runs/{run_id}.html"
    first = body.find("<p>")
    summary = _TAGS.sub("", body[first : body.find("</p>", first)]) if first >= 0 else ""
    entries = [{"location": location, "title": h1, "text": summary.strip()}]
    for role, text in _BLOCK.findall(body):
        entries.append({"location": f"{location}#{role}", "title": role.capitalize(), "text": text})
    return entries
