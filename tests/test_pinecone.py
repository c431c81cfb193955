"""Pinecone as a retriever: the store contract against a loopback index that checks
every request and response against Pinecone's published OpenAPI description (API
2025-10, vendored in tests/vendor), and against a real instance when
PILOTHOUSE_TEST_PINECONE_URL names one (Pinecone Local, or an index host with
PILOTHOUSE_TEST_PINECONE_KEY)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pinecone_server import PineconeIndex, matches

from openai_server import serve
from pilothouse.testing import StoreContract

pytest.importorskip("pinecone", reason="the pinecone extra")
pytestmark = pytest.mark.slow

KEY = "pc-test-key"


class TestPinecone(StoreContract):
    """A dotproduct index of MiniLM's 384 dimensions on 127.0.0.1, one per test."""

    @pytest.fixture(autouse=True)
    def _index(self):
        self.index = PineconeIndex(384, api_key=KEY)
        with serve(self.index.app()) as url:
            self.url = url.removesuffix("/v1")
            yield
        assert self.index.problems == []  # every request and response as published

    def plugin_settings(self, folder: Path, embedder: str = "minilm") -> dict:
        store = {"url": self.url, "api_key": KEY, "collection": "contract", "embedder": embedder}
        return {"pinecone": {"stores": {self.name: store}}}

    def unreachable_settings(self, folder: Path) -> dict:
        store = {"url": "http://127.0.0.1:9", "api_key": KEY, "timeout_s": 2}
        return {"pinecone": {"stores": {self.name: store}}}

    def wrong_key_settings(self, folder: Path) -> dict:
        store = {"url": self.url, "api_key": "pc-not-the-key", "collection": "contract"}
        return {"pinecone": {"stores": {self.name: store}}}


@pytest.mark.skipif(not os.environ.get("PILOTHOUSE_TEST_PINECONE_URL"),
                    reason="set PILOTHOUSE_TEST_PINECONE_URL to a Pinecone index host")  # fmt: skip
class TestRealPinecone(StoreContract):
    """The same contract against a real Pinecone (opt-in): a namespace per test."""

    def plugin_settings(self, folder: Path, embedder: str = "minilm") -> dict:
        import hashlib

        namespace = "c" + hashlib.sha256(str(folder).encode()).hexdigest()[:16]
        store = {"url": os.environ["PILOTHOUSE_TEST_PINECONE_URL"], "collection": namespace,
                 "api_key": os.environ.get("PILOTHOUSE_TEST_PINECONE_KEY", "pclocal"),
                 "embedder": embedder}  # fmt: skip
        return {"pinecone": {"stores": {self.name: store}}}


def test_the_loopback_index_refuses_what_the_description_does():
    """The checker itself: a request outside the description is refused and kept."""
    import httpx

    index = PineconeIndex(3, api_key=KEY)
    headers = {"Api-Key": KEY, "X-Pinecone-Api-Version": "2025-10"}
    with serve(index.app()) as url, httpx.Client(base_url=url.removesuffix("/v1")) as http:
        assert http.post("/query", json={"topK": 2, "vector": [1, 0, 0]},
                         headers=headers).status_code == 200  # fmt: skip
        assert http.post("/query", json={"vector": [1, 0, 0]}, headers=headers).status_code == 400
        assert http.post("/vectors/upsert", json={"vectors": [{"values": [1, 0, 0]}]},
                         headers=headers).status_code == 400  # fmt: skip
        old = {**headers, "X-Pinecone-Api-Version": "2024-07"}
        assert http.post("/query", json={"topK": 1, "vector": [1, 0, 0]},
                         headers=old).status_code == 400  # fmt: skip
        wrong = {**headers, "Api-Key": "nope"}
        assert http.post("/query", json={"topK": 1, "vector": [1, 0, 0]},
                         headers=wrong).status_code == 401  # fmt: skip
    assert len(index.problems) == 3
    assert "topK" in index.problems[0] and "id" in index.problems[1]


def test_filters_follow_pinecones_language():
    record = {"tags": ["solar", "gear"], "source": "a/b.md", "position": 3}
    assert matches(record, {"tags": {"$in": ["solar"]}})
    assert not matches(record, {"tags": {"$in": ["boats"]}})
    assert matches(record, {"$and": [{"source": {"$eq": "a/b.md"}}, {"position": {"$gte": 3}}]})
    assert matches(record, {"$or": [{"source": "x"}, {"tags": "gear"}]})
    assert not matches(record, {"source": {"$exists": False}})


class TestPineconeIntegrated(TestPinecone):
    """An index with integrated embedding: records go as text and are searched with
    text; the index embeds them (the test server's model is a stand-in that hashes
    words into 1024 dimensions)."""

    @pytest.fixture(autouse=True)
    def _index(self):
        self.index = PineconeIndex(1024, metric="cosine", api_key=KEY, field="chunk_text")
        with serve(self.index.app()) as url:
            self.url = url.removesuffix("/v1")
            yield
        assert self.index.problems == []

    def plugin_settings(self, folder: Path, embedder: str = "minilm") -> dict:
        store = {"url": self.url, "api_key": KEY, "collection": "contract",
                 "vectorizer": "llama-text-embed-v2", "text_field": "chunk_text"}  # fmt: skip
        if embedder != "minilm":  # the contract's other embedder: one embedding here
            store = {"url": self.url, "api_key": KEY, "collection": "contract",
                     "embedder": embedder}  # fmt: skip
        return {"pinecone": {"stores": {self.name: store}}}

    def test_a_collection_of_another_embedder_is_refused(self, tmp_path: Path) -> None:
        """Records the index embedded are refused to queries embedded here."""
        import anyio

        from pilothouse import VectorStoreError
        from pilothouse.knowledge.ingesting import ingest_into
        from pilothouse.testing import CORPUS, ingest_corpus

        next(ingest_corpus(CORPUS[:1], tmp_path / "corpus"))
        with self._open(tmp_path) as filled:
            ingest_into(filled, [tmp_path / "corpus"])
        called = [name for name, _ in self.index.calls]
        assert "upsertRecordsNamespace" in called and "upsertVectors" not in called
        with self._open(tmp_path, embedder="hashed16") as other, \
                pytest.raises(VectorStoreError) as caught:  # fmt: skip
            anyio.run(lambda: other.search("solar panel", k=2))
        assert "pinecone:llama-text-embed-v2" in str(caught.value)
