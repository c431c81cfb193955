"""Weaviate as a retriever: the store contract against a loopback Weaviate whose REST
side is checked against Weaviate's published Swagger description and whose gRPC side
parses every request with Weaviate's published protos (v1.39.0, vendored in
tests/vendor), and against a real Weaviate when PILOTHOUSE_TEST_WEAVIATE_URL names
one (a container: its REST URL, gRPC on port 50051 unless
PILOTHOUSE_TEST_WEAVIATE_GRPC says HOST:PORT)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pilothouse.testing import StoreContract

pytest.importorskip("weaviate", reason="the weaviate extra")
pytestmark = pytest.mark.slow

KEY = "wv-test-key"


class TestWeaviate(StoreContract):
    """A Weaviate on 127.0.0.1 (REST and gRPC), one per test, with an API key."""

    @pytest.fixture(autouse=True)
    def _server(self):
        from weaviate_server import Weaviate, serve

        self.server = Weaviate(api_key=KEY)
        with serve(self.server) as (http, grpc):
            self.http, self.grpc = http, grpc
            yield
        assert self.server.problems == []  # every request and response as published

    def _store(self, **extra) -> dict:
        return {"url": f"http://127.0.0.1:{self.http}", "grpc_url": f"127.0.0.1:{self.grpc}",
                "api_key": KEY, "collection": "contract", **extra}  # fmt: skip

    def plugin_settings(self, folder: Path, embedder: str = "minilm") -> dict:
        return {"weaviate": {"stores": {self.name: self._store(embedder=embedder)}}}

    def unreachable_settings(self, folder: Path) -> dict:
        store = {"url": "http://127.0.0.1:9", "grpc_url": "127.0.0.1:11", "timeout_s": 2}
        return {"weaviate": {"stores": {self.name: store}}}

    def wrong_key_settings(self, folder: Path) -> dict:
        return {"weaviate": {"stores": {self.name: self._store(api_key="wv-not-the-key")}}}


class TestWeaviateVectorizer(TestWeaviate):
    """The same, with Weaviate's own vectorizer making every vector: the client sends
    text only (the test server's text2vec-transformers is a stand-in that hashes words)."""

    def plugin_settings(self, folder: Path, embedder: str = "minilm") -> dict:
        store = self._store(vectorizer="text2vec-transformers")
        return {"weaviate": {"stores": {self.name: store}}}

    def test_a_collection_of_another_embedder_is_refused(self, tmp_path: Path) -> None:
        """A collection the module vectorizes is refused to a query embedded here."""
        import anyio

        from pilothouse import VectorStoreError
        from pilothouse.knowledge.ingesting import ingest_into
        from pilothouse.testing import CORPUS, ingest_corpus

        next(ingest_corpus(CORPUS[:1], tmp_path / "corpus"))
        with self._open(tmp_path) as filled:
            ingest_into(filled, [tmp_path / "corpus"])
        assert self.server.vectors_sent == 0  # Weaviate made them
        embedded = {"weaviate": {"stores": {self.name: self._store()}}}
        other = self._retriever(tmp_path, embedded)
        try:
            with pytest.raises(VectorStoreError) as caught:
                anyio.run(lambda: other.search("solar panel", k=2))
        finally:
            anyio.run(other.aclose)
        assert "weaviate:text2vec-transformers" in str(caught.value)
        assert "'minilm'" in str(caught.value)

    def test_a_module_the_server_lacks_is_named(self, tmp_path: Path) -> None:
        import anyio

        from pilothouse import VectorStoreError

        lacking = {"weaviate": {"stores": {self.name: self._store(vectorizer="text2vec-nope")}}}
        retriever = self._retriever(tmp_path, lacking)
        try:
            with pytest.raises(VectorStoreError) as caught:
                retriever.ready(create=True)
        finally:
            anyio.run(retriever.aclose)
        assert "text2vec-nope" in str(caught.value)


@pytest.mark.skipif(not os.environ.get("PILOTHOUSE_TEST_WEAVIATE_URL"),
                    reason="set PILOTHOUSE_TEST_WEAVIATE_URL to a Weaviate")  # fmt: skip
class TestRealWeaviate(StoreContract):
    """The same contract against a real Weaviate (opt-in): a collection per test."""

    def plugin_settings(self, folder: Path, embedder: str = "minilm") -> dict:
        import hashlib

        collection = "C" + hashlib.sha256(str(folder).encode()).hexdigest()[:16]
        store = {"url": os.environ["PILOTHOUSE_TEST_WEAVIATE_URL"], "embedder": embedder,
                 "collection": collection}  # fmt: skip
        if os.environ.get("PILOTHOUSE_TEST_WEAVIATE_GRPC"):
            store["grpc_url"] = os.environ["PILOTHOUSE_TEST_WEAVIATE_GRPC"]
        if os.environ.get("PILOTHOUSE_TEST_WEAVIATE_KEY"):
            store["api_key"] = os.environ["PILOTHOUSE_TEST_WEAVIATE_KEY"]
        return {"weaviate": {"stores": {self.name: store}}}


def test_the_loopback_weaviate_refuses_what_the_descriptions_do():
    """The checker itself: a body the Swagger schema refuses, and a gRPC request with a
    field the protos do not have, are refused and kept as problems."""
    import grpc
    import httpx
    from weaviate_server import Weaviate, message, serve

    server = Weaviate(api_key=KEY)
    auth = {"Authorization": f"Bearer {KEY}"}
    with serve(server) as (http, grpc_port), httpx.Client() as client:
        url = f"http://127.0.0.1:{http}/v1"
        assert client.get(f"{url}/meta", headers=auth).json()["version"] == "1.39.0"
        assert client.get(f"{url}/meta").status_code == 401  # no key
        refused = client.post(f"{url}/schema", headers=auth,
                              json={"class": "Notes", "properties": "text"})  # fmt: skip
        assert refused.status_code == 422
        request = message("SearchRequest")(collection="Notes", limit=1).SerializeToString()
        extra = request + bytes([0xB8, 0x3E, 0x01])  # field 999, varint 1: not in the protos
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            search = channel.unary_unary("/weaviate.v1.Weaviate/Search")
            with pytest.raises(grpc.RpcError) as caught:
                search(extra, metadata=[("authorization", f"Bearer {KEY}")], timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(server.problems) == 2
    assert "schema.objects.create request" in server.problems[0]
    assert "Search request: not in the protos" in server.problems[1]
