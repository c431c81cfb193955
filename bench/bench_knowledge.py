"""Knowledge base: ingest throughput and query latency, against raw baselines in the same run.

- ingest: ``KnowledgeBase.ingest`` of synthetic Markdown files with the real MiniLM
  embedder, in chunks/s; raw baseline: the same chunks through ``MiniLM.embed`` alone
  (the model is the floor; the rest is chunking, hashing and SQLite).
- query: hybrid ``search`` (sqlite-vec KNN + FTS5 BM25, rank-fused) at N chunks with
  synthetic unit vectors (a fixed query vector, so the model is not timed), p50/p95;
  raw baseline: a brute-force numpy scan (matrix @ query, top 10) over the same
  vectors; recall@10 of sqlite-vec's KNN against the exact numpy answer.

Usage: python bench/bench_knowledge.py [--sizes 10000 100000 1000000] [--files 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
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

    def __init__(self, vector: np.ndarray) -> None:
        self.vector = vector.tolist()

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


def bench_query(size: int, queries: int = 50) -> None:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((size, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        kb = KnowledgeBase(Path(tmp) / "kb.db", Fixed(vectors[0]))
        kb.collection("bench")
        table = kb._vectors("bench")
        started = time.perf_counter()
        batch = 20_000
        for start in range(0, size, batch):
            stop = min(size, start + batch)
            rows = [(i + 1, "bench", f"doc{i // 50}.md", "", 0, text(rng, 30), json.dumps([]))
                    for i in range(start, stop)]  # fmt: skip
            with kb.db:
                kb.db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                kb.db.executemany(
                    "INSERT INTO chunks_fts (rowid, text, heading) VALUES (?, ?, ?)",
                    [(r[0], r[5], "") for r in rows],
                )
                kb.db.executemany(
                    f"INSERT INTO {table} (rowid, embedding) VALUES (?, ?)",
                    [(i + 1, vectors[i].tobytes()) for i in range(start, stop)],
                )
        load_s = time.perf_counter() - started
        hybrid, knn, raw, recalls = [], [], [], []
        for q in range(queries):
            query = vectors[rng.integers(size)] + 0.1 * rng.standard_normal(DIM).astype(np.float32)
            query /= np.linalg.norm(query)
            kb.embedder = Fixed(query)
            started = time.perf_counter()
            kb.search(f"{WORDS[q % len(WORDS)]} {WORDS[(q * 7) % len(WORDS)]}", k=10,
                      collection="bench")  # fmt: skip
            hybrid.append(time.perf_counter() - started)
            started = time.perf_counter()
            found = kb.db.execute(
                f"SELECT rowid FROM {table} WHERE embedding MATCH ? AND k = 10 ORDER BY distance",
                (struct.pack(f"{DIM}f", *query),),
            ).fetchall()
            knn.append(time.perf_counter() - started)
            started = time.perf_counter()
            scores = vectors @ query
            top = np.argpartition(-scores, 10)[:10]
            exact = top[np.argsort(-scores[top])]
            raw.append(time.perf_counter() - started)
            recalls.append(len({r[0] - 1 for r in found} & set(exact.tolist())) / 10)
        kb.close()

    def ms(values: list[float], q: float) -> float:
        return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000

    print(
        f"query {size:>9,} chunks (load {load_s:6.1f} s): hybrid p50 {ms(hybrid, 0.5):7.1f} ms"
        f" p95 {ms(hybrid, 0.95):7.1f} | sqlite-vec KNN p50 {ms(knn, 0.5):7.1f} ms | numpy brute"
        f" force p50 {ms(raw, 0.5):6.1f} ms p95 {ms(raw, 0.95):6.1f} | KNN/numpy"
        f" {statistics.median(knn) / statistics.median(raw):5.2f}x | recall@10"
        f" {statistics.mean(recalls):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    bench_ingest(args.files)
    for size in args.sizes:
        bench_query(size)


if __name__ == "__main__":
    main()
