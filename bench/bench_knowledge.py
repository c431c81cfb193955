"""Knowledge base: ingest throughput and query latency, against raw baselines in the same run.

- ingest: ``KnowledgeBase.ingest`` of synthetic Markdown files with the real MiniLM
  embedder, in chunks/s; raw baseline: the same chunks through ``MiniLM.embed`` alone
  (the model is the floor; the rest is chunking, hashing and SQLite).
- query: at N chunks of real text with MiniLM vectors (``knowledge_corpus.py``: held-out
  queries, passages mixed to reach N), hybrid ``search`` through the derived indexes
  (usearch HNSW + tantivy BM25), with a 1% tag filter, and exact (``exact=True``:
  sqlite-vec scan + FTS5), p50/p95, the query vector fixed so the model is not timed;
  raw baseline: a brute-force numpy scan (matrix @ query, top 10) over the same
  vectors; recall@10 of the vector side against numpy's exact answer, with and
  without the filter; the index build in a process of its own (time, peak memory),
  its size on disk, and ingesting 100 new files into the collection.

Usage: python bench/bench_knowledge.py [--sizes 10000 100000 1000000] [--files 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from knowledge_corpus import Corpus
from pilothouse_knowledge import MiniLM

from pilothouse.embedding import Embedder
from pilothouse.knowledge import KnowledgeBase

WORDS = (
    "refund invoice parcel battery warranty solar backpack charge delivery customer order"
    " payment hiking trail panel weight policy contract renewal discount shipping"
).split()
DIM = 384


def text(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, n))


class Fixed(Embedder):
    """Returns one fixed vector: query timing without the model."""

    name, dimension = "fixed", DIM

    def __init__(self, vector) -> None:
        self.vector = list(map(float, vector))

    def embed(self, texts):
        return [self.vector for _ in texts]


def bench_ingest(files: int) -> None:
    rng = np.random.default_rng(1)
    minilm = MiniLM()
    minilm.embed(["warm up"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        for i in range(files):
            body = "\n\n".join(f"## Part {j}\n\n{text(rng, 120)}" for j in range(4))
            (folder / f"doc{i}.md").write_text(f"# Document {i}\n\n{body}\n")
        kb = KnowledgeBase(Path(tmp) / "kb.db", minilm)
        started = time.perf_counter()
        report = kb.ingest([folder])
        ingest_s = time.perf_counter() - started
        chunks = [row[0] for row in kb.db.execute("SELECT heading || char(10) || text FROM chunks")]
        started = time.perf_counter()
        for i in range(0, len(chunks), 32):
            minilm.embed(chunks[i : i + 32])
        raw_s = time.perf_counter() - started
        started = time.perf_counter()
        again = kb.ingest([folder])
        unchanged_s = time.perf_counter() - started
        kb.close()
    print(
        f"ingest {files} files, {report.chunks} chunks: {report.chunks / ingest_s:,.0f} chunks/s"
        f" | raw MiniLM.embed {len(chunks) / raw_s:,.0f} chunks/s | ratio"
        f" {ingest_s / raw_s:.2f}x | re-ingest unchanged: {unchanged_s:.2f} s"
        f" ({again.unchanged} skipped)"
    )


def load(kb: KnowledgeBase, corpus: Corpus) -> float:
    """The corpus into the tables as ingest writes them (no model): seconds taken.
    Every 20 passages make a document; one document in a hundred is tagged ``rare``."""
    kb.collection("bench")
    table = kb._vectors("bench")
    started = time.perf_counter()
    for first, texts, vectors in corpus.batches():
        ids = range(first + 1, first + len(texts) + 1)
        tags = [json.dumps(["rare"] if (i - 1) // 20 % 100 == 0 else []) for i in ids]
        rows = [(i, "bench", f"/kb/doc{(i - 1) // 20}.md", "", 0, t, g)
                for i, t, g in zip(ids, texts, tags, strict=True)]  # fmt: skip
        with kb.db:
            kb.db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            kb.db.executemany(
                "INSERT INTO chunks_fts (rowid, text, heading) VALUES (?, ?, ?)",
                [(r[0], r[5], "") for r in rows],
            )
            kb.db.executemany(
                f"INSERT INTO {table} (rowid, embedding) VALUES (?, ?)",
                [(i, v.tobytes()) for i, v in zip(ids, vectors, strict=True)],
            )
            documents = {r[2]: r[6] for r in rows}
            kb.db.executemany(
                "INSERT OR IGNORE INTO documents VALUES ('bench', ?, 'x')",
                [(d,) for d in documents],
            )
            kb.db.executemany(
                "INSERT OR IGNORE INTO document_tags VALUES ('bench', 'rare', ?)",
                [(d,) for d, g in documents.items() if "rare" in g],
            )
    return time.perf_counter() - started


BUILD = """
import resource, sys, time
from pilothouse.knowledge import KnowledgeBase
from bench_knowledge import Fixed
kb = KnowledgeBase(sys.argv[1], Fixed([0.0] * 384))
started = time.perf_counter()
kb.sync_index("bench", rebuild=True)
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def build(path: Path) -> tuple[float, float]:
    """Build the index in a process of its own: (seconds, peak resident MB)."""
    done = subprocess.run(
        [sys.executable, "-c", BUILD, str(path)], capture_output=True, text=True, check=True,
        cwd=Path(__file__).parent,
    )  # fmt: skip
    seconds, peak = done.stdout.split()
    return float(seconds), float(peak)


def ms(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000


def bench_query(size: int) -> None:
    corpus = Corpus(size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kb.db"
        kb = KnowledgeBase(path, Fixed([0.0] * DIM))
        load_s = load(kb, corpus)
        build_s, peak_mb = build(path)
        files = [f for f in kb.index_folder.rglob("*") if f.is_file()]
        index_mb = sum(f.stat().st_size for f in files) / 1e6
        matrix = np.concatenate([v for _, _, v in corpus.batches()])
        rare = np.array([(i // 20) % 100 == 0 for i in range(size)])
        timing: dict[str, list[float]] = {"hybrid": [], "exact": [], "rare": [], "numpy": []}
        recall: dict[str, list[float]] = {"all": [], "rare": []}
        allowed = kb._allowed("bench", None, "rare")
        for n, (text, vector) in enumerate(corpus.queries):
            kb.embedder = Fixed(vector)
            for name, kwargs in (("hybrid", {}), ("exact", {"exact": True}),
                                 ("rare", {"tag": "rare"})):  # fmt: skip
                if name == "exact" and n >= 20:  # seconds each at 1M: 20 tell enough
                    continue
                started = time.perf_counter()
                found = kb.search(text, k=10, collection="bench", **kwargs)
                timing[name].append(time.perf_counter() - started)
                assert len(found) == 10, (name, text)
            started = time.perf_counter()
            scores = matrix @ vector
            top = np.argpartition(-scores, 10)[:10]
            timing["numpy"].append(time.perf_counter() - started)
            truth = {int(i) + 1 for i in top}
            recall["all"].append(len(truth & set(kb._nearest("bench", vector, 10))) / 10)
            scores[~rare] = -2
            truth = {int(i) + 1 for i in np.argpartition(-scores, 10)[:10]}
            got = kb._nearest("bench", vector, 10, allowed=allowed)
            recall["rare"].append(len(truth & set(got)) / 10)
        kb.close()
        kb = KnowledgeBase(path, Fixed(corpus.queries[0][1]))
        docs = Path(tmp) / "new"
        docs.mkdir()
        for i in range(100):
            (docs / f"new{i}.md").write_text(corpus.queries[i % len(corpus.queries)][0] * 20)
        started = time.perf_counter()
        report = kb.ingest([docs], collection="bench")
        add_s = time.perf_counter() - started
        kb.close()
    print(
        f"{size:>9,} chunks | load {load_s:5.0f} s, index build {build_s:6.1f} s peak"
        f" {peak_mb:5.0f} MB, {index_mb:5.0f} MB on disk | hybrid p50"
        f" {ms(timing['hybrid'], 0.5):6.1f} ms p95"
        f" {ms(timing['hybrid'], 0.95):6.1f} | 1% filter p50 {ms(timing['rare'], 0.5):6.1f} p95"
        f" {ms(timing['rare'], 0.95):6.1f} | exact hybrid p50 {ms(timing['exact'], 0.5):6.1f} |"
        f" numpy top-10 p50 {ms(timing['numpy'], 0.5):5.1f} | hybrid/numpy"
        f" {statistics.median(timing['hybrid']) / statistics.median(timing['numpy']):5.2f}x |"
        f" recall@10 {statistics.mean(recall['all']):.3f}, 1% filter"
        f" {statistics.mean(recall['rare']):.3f} | +100 files {add_s:5.1f} s ({report.index})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--no-ingest", action="store_true", help="Only the query side.")
    args = parser.parse_args()
    if not args.no_ingest:
        bench_ingest(args.files)
    for size in args.sizes:
        bench_query(size)


if __name__ == "__main__":
    main()
