"""Reading files as text for the knowledge base: Markdown and text as they are, HTML's
visible text (headings kept), PDF through pypdf; what is not text is said so."""

from __future__ import annotations

import html.parser
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError, PilothouseError

SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm", ".pdf"}


class KnowledgeError(PilothouseError):
    """The knowledge base cannot do what was asked (the message says why)."""

    kind = "knowledge"


class NotText(KnowledgeError):
    """A file that is not text: skipped, and what an earlier ingest had of it is dropped."""


class _TextOfHTML(html.parser.HTMLParser):
    """Visible text of an HTML page, headings kept as Markdown headings."""

    SKIP = {"script", "style", "head", "noscript"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in ("p", "div", "li", "br", "tr", "section", "article"):
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


#: the share of undecodable characters above which a file is taken for binary
NOT_TEXT_SHARE = 0.05


def _decoded(path: Path) -> str:
    """A text file's content as UTF-8 (a stray bad byte becomes U+FFFD); a file that is
    not text at all (a NUL byte, as git judges it, or mostly undecodable) is refused:
    indexed, it would fill search results and context windows with noise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KnowledgeError(f"cannot read {path}: {exc}") from exc
    text = data.decode("utf-8", errors="replace")
    if b"\x00" in data[:8000] or text.count("\ufffd") > NOT_TEXT_SHARE * len(text):
        raise NotText(f"{path}: not UTF-8 text (binary content?)")
    return text


def text_of(path: Path) -> str:
    """A file's text: Markdown and text as they are, HTML without its markup, PDF
    through pypdf (one paragraph break between pages)."""
    if path.suffix.lower() == ".pdf":
        try:
            from pypdf import PdfReader
        except ImportError as exc:
            raise ConfigError("PDF files need pypdf: pip install 'pilothouse[knowledge]'") from exc
        try:
            pages = PdfReader(path).pages
            return "\n\n".join((page.extract_text() or "").strip() for page in pages).strip()
        except Exception as exc:  # a damaged or encrypted file: name it, keep going is the caller's
            raise KnowledgeError(f"cannot read the PDF {path}: {exc}") from exc
    raw = _decoded(path)
    if path.suffix.lower() in (".html", ".htm"):
        parser = _TextOfHTML()
        parser.feed(raw)
        return re.sub(r"\n{3,}", "\n\n", "".join(parser.parts)).strip()
    return raw
