"""Audit portal build cost: full and incremental, for 1k and 10k runs.

A synthetic store of N runs (each: 2 steps, a retrieval of 2 passages, 2 model
calls, a tool call, a guardrail verdict; about 4 KB of page) is turned into a
portal. Measured in the same run:

- raw baseline: ``mkdocs build`` of N plain 1-KB pages with the same theme and
  a small explicit nav (what the builder alone costs for that many pages);
- generate: run store -> Markdown (pages/s);
- full build: generate + ``mkdocs build --strict``;
- incremental: 10 new runs added, then generate + build again.

Usage: python bench/bench_portal.py [--runs 1000 10000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pilothouse.events import (
    ContextBuilt,
    ContextPiece,
    GuardrailChecked,
    ModelCalled,
    RetrievalDone,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
    ToolCalled,
    log_entry,
)
from pilothouse.model import Message, Usage
from pilothouse.portal import Portal
from pilothouse.retrieval import Passage
from pilothouse.store.sqlite import SQLiteRunStore

WORDS = "helio backpack solar panel hikers battery market growth charge trail weight".split()


def _text(i: int, n: int) -> str:
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(n))


def fill(store: SQLiteRunStore, start: int, count: int, t0: float) -> None:
    """Write ``count`` synthetic runs (ids run-<start>..)."""
    batch = []
    for i in range(start, start + count):
        run_id = f"run{i:07d}"
        ts = t0 + i * 30
        kw = {"run_id": run_id}
        crew = f"crew{i % 5}"
        events = [
            RunStarted(**kw, crew=crew, input=f"brief {i}: {_text(i, 12)}", flow="sequential"),
            StepStarted(**kw, step_id="1", persona="researcher", input="brief", model="offline:x"),
            RetrievalDone(
                **kw,
                step_id="1",
                retriever="corpus",
                query=_text(i, 6),
                passages=[
                    Passage(
                        id=f"doc{i % 40}#1", text=_text(i, 60), source=f"doc{i % 40}.md", score=3.2
                    ),
                    Passage(
                        id=f"doc{i % 17}#2",
                        text=_text(i + 1, 60),
                        source=f"doc{i % 17}.md",
                        score=1.1,
                    ),
                ],
            ),
            ContextBuilt(
                **kw,
                step_id="1",
                persona="researcher",
                tokens=300,
                pieces=[
                    ContextPiece(kind="instructions", source="persona:researcher", tokens=40),
                    ContextPiece(kind="passage", source="corpus", ref=f"doc{i % 40}#1", tokens=130),
                ],
            ),
            ModelCalled(
                **kw,
                step_id="1",
                model="offline:x",
                offline=True,
                messages=[
                    Message(role="system", content="You research."),
                    Message(role="user", content=_text(i, 80)),
                ],
                text=_text(i, 50),
                usage=Usage(input_tokens=300, output_tokens=60),
                latency_ms=12.0,
                cost_usd=0.0004,
            ),
            ToolCalled(
                **kw,
                step_id="1",
                call_id="c1",
                tool="market_size",
                arguments='{"segment": "day hikers"}',
                result=_text(i, 20),
            ),
            StepFinished(**kw, step_id="1", persona="researcher", output=_text(i, 50)),
            StepStarted(**kw, step_id="2", persona="writer", input="notes", model="offline:x"),
            ModelCalled(
                **kw,
                step_id="2",
                model="offline:x",
                offline=True,
                messages=[Message(role="user", content=_text(i, 50))],
                text=_text(i + 2, 40),
                usage=Usage(input_tokens=200, output_tokens=50),
                latency_ms=10.0,
                cost_usd=0.0003,
            ),
            GuardrailChecked(
                **kw, step_id="2", guardrail="risky_claims", stage="output", action="pass"
            ),
            StepFinished(**kw, step_id="2", persona="writer", output=_text(i + 2, 40)),
            RunFinished(
                **kw,
                output=_text(i + 2, 40),
                steps=2,
                input_tokens=500,
                output_tokens=110,
                cost_usd=0.0007,
            ),
        ]
        for seq, e in enumerate(events, start=1):
            e.seq, e.ts = seq, ts + seq * 0.1
            batch.append(log_entry(e))
        if len(batch) > 5000:
            store.write(batch)
            batch = []
    store.write(batch)


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def raw_baseline(folder: Path, n: int) -> float:
    """mkdocs build of n plain 1-KB pages, same theme, small nav."""
    docs = folder / "docs"
    (docs / "p").mkdir(parents=True)
    (docs / "index.md").write_text("# home\n")
    for i in range(n):
        (docs / "p" / f"{i}.md").write_text(f"# page {i}\n\n" + _text(i, 150) + "\n")
    (folder / "mkdocs.yml").write_text(
        "site_name: raw\ndocs_dir: docs\nsite_dir: site\nuse_directory_urls: false\n"
        "theme:\n  name: material\n  font: false\nplugins:\n  - search\n"
        "nav:\n  - Home: index.md\nvalidation:\n  nav:\n    omitted_files: ignore\n"
    )
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "-q", "-f", str(folder / "mkdocs.yml")],
        check=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    return time.perf_counter() - started


def bench(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        raw = raw_baseline(root / "raw", n)
        store = SQLiteRunStore(root / "runs.db")
        t0 = time.time() - n * 30
        fill(store, 0, n, t0)
        portal = Portal(store, root / "portal")
        made = portal.generate()
        build = portal.build()
        full = made.seconds + build
        site = size_mb(portal.site)
        fill(store, n, 10, t0)
        again = portal.generate()
        build2 = portal.build()
        store.close()
    print(
        f"runs {n:>6}: raw mkdocs {n} 1-KB pages {raw:6.1f} s | generate {made.seconds:5.1f} s"
        f" ({made.written / made.seconds:,.0f} pages/s) + build {build:6.1f} s = full {full:6.1f} s"
        f" ({full / raw:.2f}x raw), site {site:,.0f} MB | +10 runs: generate"
        f" {again.seconds:4.1f} s ({again.written} pages) + build {build2:5.1f} s"
        f" = {again.seconds + build2:5.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10000])
    for n in parser.parse_args().runs:
        bench(n)


if __name__ == "__main__":
    main()
