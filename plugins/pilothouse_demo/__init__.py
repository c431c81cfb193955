"""The demo: Northwind Gear's marketing crew, from the seed text.

researcher -> analyst -> creative -> compliance, grounded in a small corpus
written for the demo, with a market-size tool and the compliance persona's
output guarded by the bundled ``risky_claims`` and ``redact_pii`` guardrails.
Two more crews show the other flows: ``support`` (handoff) and
``launch-review`` (parallel fan-out with a join).

It uses only the public API and the same hooks a third-party plugin would.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from pilothouse import Crew, hookimpl, load_crew_file, tool

from .corpus import CorpusRetriever

HERE = Path(str(files(__name__)))

# Figures for the market_size tool; written for the demo, not real data.
MARKET = {
    "day hikers": ("2.1 billion euros", "6 percent a year"),
    "solar accessories": ("310 million euros", "14 percent a year"),
    "daypacks": ("1.2 billion euros", "3 percent a year"),
}


@tool(blocking=False)
def market_size(segment: str) -> str:
    """Look up the market size and yearly growth of an outdoor market segment in Europe."""
    text = segment.lower()
    rows = [
        f"{name}: {size}, growing {growth}"
        for name, (size, growth) in MARKET.items()
        if any(word in text for word in name.split())
    ]
    if not rows:
        known = ", ".join(MARKET)
        return f"No figures for {segment!r}. Known segments: {known}."
    return "European market, 2026 estimate. " + "; ".join(rows) + "."


@hookimpl
def register_tools(register):
    """The demo's tool."""
    register(market_size)


@hookimpl
def register_retrievers(register):
    """The demo corpus, searchable by the researcher."""
    register(CorpusRetriever("demo_corpus", HERE / "corpus"))


@hookimpl
def register_crews(register):
    """The demo crews, each a TOML crew file shipped with the plugin."""
    for name in ("marketing", "support", "launch-review", "loans", "newsdesk"):
        crew: Crew = load_crew_file(HERE / f"{name}.toml")
        register(crew)
