"""The knowledge base's approximate vector index: agreement with the exact scan, filters,
incremental changes, a stale reader, kill -9 during ingest, ``--exact`` and ``--reindex``."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("sqlite_vec", reason="the knowledge base is the [knowledge] extra")
pytest.importorskip("usearch", reason="the vector index is the [knowledge] extra")

from click.testing import CliRunner
from pilothouse_knowledge import MiniLM

from pilothouse.cli import cli
from pilothouse.embedding import Embedder
from pilothouse.knowledge import base
from pilothouse.knowledge.base import KnowledgeBase
from pilothouse.knowledge.vectorindex import VectorIndex

TOPICS = ("refund", "parcel", "battery", "warranty", "invoice", "hiking", "solar", "contract")
VOCABULARY = [f"{topic}{i}" for topic in TOPICS for i in range(30)]


class Words(Embedder):
    """Bag of words with a fixed random vector per word: texts sharing words are near.
    Deterministic, and clustered by topic like real embeddings."""

    name, dimension = "words", 48

    def embed(self, texts):
        out = []
        for text in texts:
            total = np.zeros(self.dimension)
            for word in text.split():
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
                topic = next((t for t in TOPICS if word.startswith(t)), word)
                anchor = int.from_bytes(hashlib.sha256(topic.encode()).digest()[:4], "little")
                total += np.random.default_rng(seed).standard_normal(self.dimension)
                total += 2 * np.random.default_rng(anchor).standard_normal(self.dimension)
            out.append((total / max(np.linalg.norm(total), 1e-9)).tolist())
        return out


def write_docs(folder, count, *, seed=0, prefix="doc"):
    """``count`` one-chunk files of 12 words each, mostly from one topic."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        topic = TOPICS[int(rng.integers(len(TOPICS)))]
        words = [f"{topic}{rng.integers(30)}" for _ in range(9)]
        words += [VOCABULARY[int(rng.integers(len(VOCABULARY)))] for _ in range(3)]
        (folder / f"{prefix}{i:04d}.txt").write_text(" ".join(words))


def queries(count, seed=99):
    rng = np.random.default_rng(seed)
    return [
        " ".join(f"{TOPICS[int(rng.integers(len(TOPICS)))]}{rng.integers(30)}" for _ in range(4))
        for _ in range(count)
    ]


def nearest(kb, text, depth=10, **kwargs):
    (vector,) = kb.embedder.embed([text])
    return kb._nearest("default", vector, depth, **kwargs)


def same_answer(kb, text, got, exact):
    """The same chunks up to ties: their exact distances to the query agree in order
    (an index keeps half-precision vectors; two chunks 1e-6 apart may swap)."""
    query = np.asarray(kb.embedder.embed([text])[0], dtype=np.float32)
    table = kb._vectors("default")

    def distances(keys):
        found = kb._vectors_of(table, keys)
        return np.array([1 - float(found[key] @ query) for key in keys])

    return len(got) == len(exact) and np.allclose(distances(got), distances(exact), atol=1e-4)


def pending_kept(kb, got, exact):
    """Every chunk the saved index lacks (scored exactly, beside it) that the exact
    answer ranks in its first nine is in the answer's first ten (one slot spare for
    a half-precision tie)."""
    pending = {chunk for (chunk,) in kb.db.execute("SELECT chunk FROM index_log")}
    return set(exact[:9]) & pending <= set(got[:10])


@pytest.fixture
def kb(tmp_path):
    write_docs(tmp_path / "docs", 400)
    knowledge = KnowledgeBase(tmp_path / "knowledge.db", Words(), index_from=50)
    report = knowledge.ingest([tmp_path / "docs"])
    assert report.index == "index built from 400 vectors"
    yield knowledge
    knowledge.close()


def index_files(kb):
    folder = kb.index_folder
    return sorted(p.name for p in folder.iterdir())


def test_the_index_and_the_exact_scan_agree(kb):
    table = kb._vectors("default")
    assert index_files(kb) == [f"{table}.400.usearch", f"{table}.tantivy", f"{table}.tantivy.seq"]
    recalls, firsts = [], 0
    for text in queries(40):
        approximate, exact = nearest(kb, text), nearest(kb, text, exact=True)
        assert len(approximate) == len(exact) == 10
        recalls.append(len(set(approximate) & set(exact)) / 10)
        firsts += approximate[0] == exact[0]
    assert np.mean(recalls) >= 0.95 and firsts >= 38
    # the fused answer has the same shape both ways
    found = kb.search("refund3 refund7", k=5)
    assert len(found) == 5 and all(p.source.endswith(".txt") for p in found)


def test_the_keyword_index_and_fts5_agree(kb):
    """tantivy and FTS5 both rank by BM25 (their IDF formulas differ slightly)."""
    overlaps = []
    for text in queries(40):
        terms = text.split()[:3]
        top, exact = (
            kb._lexical("default", terms, 10),
            kb._lexical("default", terms, 10, exact=True),
        )
        assert len(top) == len(exact) == 10
        overlaps.append(len(set(top) & set(exact)) / 10)
    assert np.mean(overlaps) >= 0.9
    allowed = kb._allowed("default", "doc001", None)
    (text,) = kb.db.execute("SELECT text FROM chunks WHERE source LIKE '%doc0013.txt'").fetchone()
    words = text.split()[:3]  # words of a chunk the filter keeps, most of them elsewhere too
    filtered = kb._lexical("default", words, 40, allowed)
    assert filtered and set(filtered) <= allowed
    assert set(filtered) == set(kb._lexical("default", words, 40, allowed, exact=True))
    assert len(set(kb._lexical("default", words, 40)) - allowed) > 0


def test_every_node_of_a_small_graph_is_reachable(tmp_path):
    """Two threads inserting into a small HNSW graph can lose a back-link and leave a
    chunk no search reaches: a search as wide as the graph finds every chunk, build
    after build."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((300, 48)).astype(np.float32)
    query = rng.standard_normal(48).astype(np.float32)
    for build in range(12):
        index = VectorIndex(tmp_path, f"t{build}", 48)
        index.reset()
        index.update([(np.arange(1, 301), vectors)], [])
        found = {key for key, _ in index.search(query, 300)}
        assert found == set(range(1, 301)), f"build {build}: {300 - len(found)} unreachable"


def test_a_small_collection_has_no_index_and_scans(tmp_path):
    write_docs(tmp_path / "docs", 30)
    knowledge = KnowledgeBase(tmp_path / "knowledge.db", Words(), index_from=50)
    assert knowledge.ingest([tmp_path / "docs"]).index == "no index: exact scan"
    assert not knowledge._index("default").exists()
    assert len(knowledge.search("refund1 parcel2", k=5)) == 5
    knowledge.close()


@pytest.mark.parametrize("narrow_path", [True, False], ids=["scored-exactly", "over-fetched"])
def test_filters_give_the_exact_filtered_answer(kb, tmp_path, monkeypatch, narrow_path):
    if not narrow_path:  # every filter goes through the index, over-fetching
        monkeypatch.setattr(base, "EXACT_UP_TO", 0)
    # a 1% filter: four files of four hundred
    allowed = kb._allowed("default", "doc001", None)
    assert len(allowed) == 10  # doc0010..doc0019
    for text in queries(10):
        got = nearest(kb, text, allowed=allowed)
        assert len(got) == 10 and set(got) <= allowed
        assert same_answer(kb, text, got, nearest(kb, text, allowed=allowed, exact=True))
    found = kb.search("refund3 refund7 parcel2", k=5, source="doc001")
    assert len(found) == 5 and all("doc001" in p.source for p in found)


def test_tags_filter_both_sides(kb, tmp_path):
    write_docs(tmp_path / "tagged", 5, seed=5, prefix="tagged")
    kb.ingest([tmp_path / "tagged"], tags=["legal"])
    found = kb.search("refund3 refund7 parcel2 battery1", k=8, tag="legal")
    assert len(found) == 5 and all("tagged" in p.source for p in found)
    assert kb._allowed("default", None, "legal") == {
        rowid for (rowid,) in kb.db.execute("SELECT id FROM chunks WHERE source LIKE '%tagged%'")
    }


def test_changes_go_into_the_index_without_a_rebuild(kb, tmp_path):
    docs = tmp_path / "docs"
    for i in range(10):
        (docs / f"doc{i:04d}.txt").unlink()
    (docs / "fresh.txt").write_text("zebra " * 12)
    report = kb.ingest([docs])
    assert (report.removed, report.updated) == (10, 1)
    assert report.index == "index updated: 1 in, 10 out"
    index = kb._index("default")
    assert len(index) == 391 and kb.db.execute("SELECT count(*) FROM index_log").fetchone() == (0,)
    assert (
        nearest(kb, "zebra")[0]
        == kb.db.execute("SELECT id FROM chunks WHERE source LIKE '%fresh.txt'").fetchone()[0]
    )
    fresh = kb.db.execute("SELECT id FROM chunks WHERE source LIKE '%fresh.txt'").fetchone()[0]
    assert kb._keywords("default").exists() and kb._lexical("default", ["zebra"], 5) == [fresh]
    sources = {p.source for p in kb.search("refund1 parcel1 battery1 zebra", k=50)}
    assert not any(f"doc{i:04d}.txt" in s for s in sources for i in range(10))


def test_a_reader_with_an_old_index_sees_every_change(kb, tmp_path):
    reader = KnowledgeBase(kb.path, Words(), index_from=50)
    before = nearest(reader, "zebra")
    assert reader._index("default").seq >= 0
    # another process adds a file, and saves a newer index that empties the log
    (tmp_path / "docs" / "fresh.txt").write_text("zebra " * 12)
    kb.ingest([tmp_path / "docs"])
    assert kb.db.execute("SELECT count(*) FROM index_log").fetchone() == (0,)
    after = nearest(reader, "zebra")
    fresh = kb.db.execute("SELECT id FROM chunks WHERE source LIKE '%fresh.txt'").fetchone()[0]
    assert fresh not in before and after[0] == fresh
    reader.close()


def test_a_log_not_yet_in_the_index_is_searched_exactly(kb, tmp_path, monkeypatch):
    """Changes committed but never saved into the index (the process died between the
    two): a search scores them exactly and leaves out what they deleted."""
    monkeypatch.setattr(KnowledgeBase, "sync_index", lambda self, *a, **k: "skipped")
    docs = tmp_path / "docs"
    gone = [kb.db.execute("SELECT id FROM chunks WHERE source LIKE ?", (f"%doc{i:04d}.txt",))
            .fetchone()[0] for i in range(20)]  # fmt: skip
    for i in range(20):
        (docs / f"doc{i:04d}.txt").unlink()
    (docs / "fresh.txt").write_text("zebra " * 12)
    kb.ingest([docs])
    pending = kb.db.execute("SELECT count(DISTINCT chunk) FROM index_log").fetchone()[0]
    assert pending == 21
    fresh = kb.db.execute("SELECT id FROM chunks WHERE source LIKE '%fresh.txt'").fetchone()[0]
    assert kb._lexical("default", ["zebra"], 5) == [fresh]  # from FTS5: the index lacks it
    for words in (["refund1"], ["parcel2", "battery3"]):
        assert not set(kb._lexical("default", words, 40)) & set(gone)
    recalls = []
    for text in [*queries(20), "zebra"]:
        got = nearest(kb, text, depth=30)
        assert not set(got) & set(gone)
        exact = nearest(kb, text, depth=30, exact=True)
        assert pending_kept(kb, got, exact)
        recalls.append(len(set(got[:10]) & set(exact[:10])) / 10)
    assert np.mean(recalls) >= 0.9


CRASHING_INGEST = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_knowledge_index import Words
    from pilothouse.knowledge.base import KnowledgeBase
    from pilothouse.knowledge import vectorindex

    def announce(moment):  # whole or not at all: the test reads it as soon as it exists
        with open({marker!r} + ".tmp", "w") as f:
            f.write(moment)
        os.replace({marker!r} + ".tmp", {marker!r})

    class Stalls(Words):
        calls = 0

        def embed(self, texts):
            Stalls.calls += 1
            if {stall_at} and Stalls.calls == {stall_at}:
                announce("embedding")
                signal.pause()  # killed here, mid-ingest
            return super().embed(texts)

    def save(self, seq):
        announce("saving")
        signal.pause()  # killed here: the chunks are committed, the index is not saved

    vectorindex.VectorIndex.save = save
    kb = KnowledgeBase({db!r}, Stalls(), index_from=50)
    kb.ingest([{docs!r}])
    """
)


@pytest.mark.parametrize("moment", ["embedding", "saving"])
def test_kill_9_during_ingest_loses_nothing_and_returns_nothing_deleted(kb, tmp_path, moment):
    docs = tmp_path / "docs"
    deleted = {f"doc{i:04d}.txt" for i in range(0, 400, 7)}
    for name in deleted:
        (docs / name).unlink()
    write_docs(docs, 60, seed=3, prefix="new")
    marker = tmp_path / "marker"
    script = CRASHING_INGEST.format(
        tests=os.path.dirname(__file__), stall_at=30 if moment == "embedding" else 0,
        marker=str(marker), db=str(kb.path), docs=str(docs),
    )  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120  # a bound, not a precondition
        while not marker.exists():  # the kill waits for the moment the child announces
            assert child.poll() is None, "the ingest ended before it reached the moment"
            assert time.monotonic() < deadline, "the ingest never reached the moment"
            time.sleep(0.01)
        assert marker.read_text() == moment
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    reopened = KnowledgeBase(kb.path, Words(), index_from=50)
    indexed = {row[0] for row in reopened.db.execute("SELECT source FROM documents")}
    chunks = {row[0] for row in reopened.db.execute("SELECT id FROM chunks")}
    recalls = []
    for text in [*queries(20), " ".join(f"refund{i}" for i in range(10))]:
        got = nearest(reopened, text, depth=40)
        assert set(got) <= chunks  # nothing missing, nothing deleted
        exact = nearest(reopened, text, 40, exact=True)
        assert pending_kept(reopened, got, exact)
        recalls.append(len(set(got[:10]) & set(exact[:10])) / 10)
        for p in reopened.search(text, k=10):
            assert p.source in indexed
    assert np.mean(recalls) >= 0.9
    if moment == "saving":  # every change was committed: the deleted files are gone
        assert not any(os.path.basename(s) in deleted for s in indexed)
        assert sum("new" in os.path.basename(s) for s in indexed) == 60
    report = reopened.ingest([docs])  # the next ingest catches the index up
    assert report.index.startswith("index updated") and len(reopened._index("default")) == len(
        {row[0] for row in reopened.db.execute("SELECT id FROM chunks")}
    )
    reopened.close()


def test_the_collection_shrinking_below_the_size_drops_its_index(kb, tmp_path):
    docs = tmp_path / "docs"
    for path in sorted(docs.iterdir())[:370]:
        path.unlink()
    assert kb.ingest([docs]).index == "no index: exact scan"
    assert index_files(kb) == [] and len(kb.search("refund1", k=5)) == 5


def test_cli_reindex_and_exact(tmp_path, monkeypatch):
    write_docs(tmp_path / "docs", 120)
    workspace = tmp_path / "ws"
    env = {"PILOTHOUSE_WORKSPACE": str(workspace), "PILOTHOUSE_KNOWLEDGE_INDEX_FROM": "100"}
    runner = CliRunner()
    first = runner.invoke(cli, ["ingest", str(tmp_path / "docs")], env=env)
    assert first.exit_code == 0, first.output
    assert "index built from 120 vectors" in first.output
    again = runner.invoke(cli, ["ingest", "--reindex", str(tmp_path / "docs")], env=env)
    assert again.exit_code == 0 and "index built from 120 vectors" in again.output
    query = "refund1 refund2 refund3"
    scans = []
    scan = KnowledgeBase._scan
    monkeypatch.setattr(KnowledgeBase, "_scan", lambda kb, *a: scans.append(1) or scan(kb, *a))
    kb = KnowledgeBase(workspace / "knowledge.db", MiniLM())
    answers = {}
    for flag in ([], ["--exact"]):
        scans.clear()
        result = runner.invoke(cli, ["search", query, "-k", "5", "--json", *flag], env=env)
        assert result.exit_code == 0, result.output
        # the search the flag asks for: the index, or every vector
        assert len(scans) == (1 if flag else 0)
        answers[bool(flag)] = [p["id"] for p in json.loads(result.output)]
        assert answers[bool(flag)] == [p.id for p in kb.search(query, k=5, exact=bool(flag))]
    # on 120 chunks the index is as good as the scan: the same five chunks
    assert len(answers[True]) == 5 and set(answers[False]) == set(answers[True])
    kb.close()


@pytest.mark.parametrize(
    "order", [("usearch.index", "onnxruntime"), ("onnxruntime", "usearch.index")]
)
def test_the_index_and_the_embedder_load_in_either_order(order):
    """Some usearch builds crash the process when onnxruntime loads after them (the
    pin in pyproject.toml keeps those out): a retriever loads both, in any order."""
    pytest.importorskip("onnxruntime")
    code = f"import {order[0]}; import {order[1]}; print('both')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "both", done.stderr[-500:]
