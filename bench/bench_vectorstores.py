"""External vector stores through pilothouse against each store's own client, in one
run, on the same collection of 10,000 chunks.

For each store that runs here (Chroma embedded, Qdrant local mode, Milvus Lite):

- ingest: the chunks written through the store plugin (``StoreSink.replace``, a source
  of 50 chunks at a time, as ``pilothouse ingest --into`` writes a file), chunks/s;
- search: p50/p95 of a query through the pilothouse store (``query``: the filter
  translation, its hybrid legs, the passages made) against the same request sent with
  the vendor's client by hand (the floor), both given the same precomputed query
  vector (the embedder's time is the same for both and left out);
- recall@10 of the pilothouse search against an exact scan (numpy, cosine) of the same
  vectors, beside that of a plain dense query with the vendor's client.

The vectors are random unit vectors in 384 dimensions around 200 topic centres (text
made of topic words), so that the nearest neighbours are meaningful and the keyword
legs have something to match; the queries are held-out perturbations of chunks.

Usage: python bench/bench_vectorstores.py [--chunks 10000] [--queries 200]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DIM = 384
PER_SOURCE = 50


class _Embedder:
    name = "bench"
    dimension = DIM


def corpus(chunks: int, seed: int = 7) -> tuple[np.ndarray, list[str], list[str]]:
    """Unit vectors around topic centres, their texts and sources."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, DIM))
    topic = rng.integers(0, 200, size=chunks)
    vectors = centres[topic] + rng.normal(scale=0.6, size=(chunks, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = [f"w{t}x{i}" for t in range(200) for i in range(8)]
    picker = random.Random(seed)
    texts = [" ".join(picker.choice(words[t * 8:(t + 1) * 8]) for _ in range(40))
             for t in topic]  # fmt: skip
    sources = [f"/bench/docs/topic{i // PER_SOURCE}.md" for i in range(chunks)]
    return vectors.astype(np.float32), texts, sources


def stores(folder: Path) -> dict[str, Any]:
    """A fresh store of each kind that runs here, with its raw client's query."""
    from pilothouse_chroma import StoreSettings as ChromaSettings
    from pilothouse_chroma.store import ChromaStore
    from pilothouse_milvus import StoreSettings as MilvusSettings
    from pilothouse_milvus.store import MilvusStore
    from pilothouse_qdrant import StoreSettings as QdrantSettings
    from pilothouse_qdrant.store import QdrantStore

    return {
        "chroma": ChromaStore("bench", ChromaSettings(path=str(folder / "chroma"),
                                                      embedder="bench")),
        "qdrant": QdrantStore("bench", QdrantSettings(path=str(folder / "qdrant"),
                                                      embedder="bench")),
        "milvus": MilvusStore("bench", MilvusSettings(uri=str(folder / "milvus.db"),
                                                      embedder="bench")),
    }  # fmt: skip


def raw_query(kind: str, store: Any, vector: list[float], text: str, k: int) -> list[str]:
    """The same request the plugin makes, sent with the vendor's client by hand: the
    floor of a search through pilothouse."""
    wanted = max(k * 4, 20)
    if kind == "chroma":
        from pilothouse_chroma.store import _words

        collection = store._collection
        dense = collection.query(query_embeddings=[vector], n_results=wanted,
                                 include=["documents", "distances"])  # fmt: skip
        words = [{"$contains": w} for w in _words(text)]
        keyword = collection.query(query_embeddings=[vector], n_results=wanted,
                                   where_document={"$or": words} if len(words) > 1 else words[0],
                                   include=["documents", "distances"])  # fmt: skip
        scored = {i: 1 - d for leg in (dense, keyword)
                  for i, d in zip(leg["ids"][0], leg["distances"][0], strict=True)}  # fmt: skip
        return sorted(scored, key=scored.get, reverse=True)[:k]  # type: ignore[arg-type]
    if kind == "qdrant":
        from pilothouse_qdrant.store import WORDS, sparse
        from qdrant_client import models

        legs = [models.Prefetch(query=vector, using="bench", limit=wanted),
                models.Prefetch(query=sparse(text), using=WORDS, limit=wanted)]  # fmt: skip
        found = store._client.query_points(store.settings.collection, prefetch=legs,
                                           query=models.FusionQuery(fusion=models.Fusion.RRF),
                                           limit=k)  # fmt: skip
        return [str(p.id) for p in found.points]
    from pymilvus import AnnSearchRequest, RRFRanker

    legs = [AnnSearchRequest([vector], "dense", {"metric_type": "COSINE"}, limit=wanted),
            AnnSearchRequest([text], "sparse", {"metric_type": "BM25"}, limit=wanted)]  # fmt: skip
    found = store._client.hybrid_search(store.settings.collection, legs, RRFRanker(), limit=k)
    return [str(hit["id"]) for hit in found[0]]


def dense_query(kind: str, store: Any, vector: list[float], k: int) -> list[str]:
    """A plain nearest-neighbour query with the vendor's client (dense recall, for
    reference)."""
    if kind == "chroma":
        return store._collection.query(query_embeddings=[vector], n_results=k,
                                       include=[])["ids"][0]  # fmt: skip
    if kind == "qdrant":
        found = store._client.query_points(store.settings.collection, query=vector,
                                           using="bench", limit=k)  # fmt: skip
        return [str(p.id) for p in found.points]
    found = store._client.search(store.settings.collection, [vector], anns_field="dense",
                                 limit=k, search_params={"metric_type": "COSINE"})  # fmt: skip
    return [str(hit["id"]) for hit in found[0]]


def main() -> None:
    """Ingest, then time queries both ways, then recall against an exact scan."""
    from pilothouse import StoredChunk, chunk_id

    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    options = parser.parse_args()
    vectors, texts, sources = corpus(options.chunks)
    rng = np.random.default_rng(11)
    picks = rng.choice(options.chunks, size=options.queries, replace=False)
    queries = vectors[picks] + rng.normal(scale=0.02, size=(options.queries, DIM))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    query_texts = [" ".join(texts[i].split()[:3]) for i in picks]
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    ids = [chunk_id(sources[i], i) for i in range(options.chunks)]
    print(f"{options.chunks} chunks of {DIM} dimensions, {options.queries} held-out queries;"
          " times per query, in milliseconds")  # fmt: skip
    print(f"{'store':<8}{'ingest/s':>10}{'p50':>8}{'p95':>8}{'raw p50':>9}{'raw p95':>9}"
          f"{'p50 ratio':>11}{'p50 +ms':>9}{'recall@10':>11}{'dense only':>11}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for kind, store in stores(Path(tmp)).items():
            store.prepare(_Embedder(), create=True)
            started = time.perf_counter()
            for first in range(0, options.chunks, PER_SOURCE):
                part = range(first, min(first + PER_SOURCE, options.chunks))
                store.replace(sources[first], [
                    StoredChunk(id=ids[i], source=sources[i], text=texts[i], position=i,
                                digest="d", vector=vectors[i].tolist())
                    for i in part
                ])  # fmt: skip
            rate = options.chunks / (time.perf_counter() - started)
            ours, raw, hits, raw_hits = [], [], 0, 0
            for n, (vector, text) in enumerate(zip(queries.tolist(), query_texts, strict=True)):
                wanted = {ids[i] for i in exact[n]}
                began = time.perf_counter()
                found = store.query(vector, text, 10, None)
                ours.append(time.perf_counter() - began)
                began = time.perf_counter()
                raw_query(kind, store, vector, text, 10)
                raw.append(time.perf_counter() - began)
                hits += len(wanted & {p.id for p in found})
                raw_hits += len(wanted & set(dense_query(kind, store, vector, 10)))
            store.close()
            p50, raw50 = statistics.median(ours), statistics.median(raw)
            p95 = statistics.quantiles(ours, n=20)[-1]
            raw95 = statistics.quantiles(raw, n=20)[-1]
            total = 10 * options.queries
            print(f"{kind:<8}{rate:>10.0f}{p50 * 1e3:>8.2f}{p95 * 1e3:>8.2f}"
                  f"{raw50 * 1e3:>9.2f}{raw95 * 1e3:>9.2f}{p50 / raw50:>10.2f}x"
                  f"{(p50 - raw50) * 1e3:>+9.2f}{hits / total:>11.3f}"
                  f"{raw_hits / total:>11.3f}")  # fmt: skip
    print("raw: the same hybrid request sent with the vendor's client by hand; dense only:"
          " the recall@10 of a plain nearest-neighbour query. Target (issue 36): p50 <= 1.1x"
          " raw + 0.3 ms")  # fmt: skip


if __name__ == "__main__":
    main()
