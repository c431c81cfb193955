"""External vector stores as retrievers: each passes the retriever contract and the
store contract of pilothouse.testing (ranking, k, filters pushed down, provenance,
unicode, a 10 KB passage, empty collection, ingest twice, a changed and a removed
file, another embedder's collection, a store that is down)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from pilothouse.testing import StoreContract

pytestmark = pytest.mark.slow


class TestChroma(StoreContract):
    """Chroma embedded in the process (PersistentClient on a folder); a Chroma server
    where nothing listens for the store that is down."""

    def plugin_settings(self, folder: Path, embedder: str = "minilm") -> dict:
        store = {"path": str(folder / "chroma"), "collection": "contract", "embedder": embedder}
        return {"chroma": {"stores": {self.name: store}}}

    def unreachable_settings(self, folder: Path) -> dict:
        store = {"url": "http://127.0.0.1:9", "collection": "contract", "timeout_s": 2}
        return {"chroma": {"stores": {self.name: store}}}


def test_ingest_into_and_search_from_the_cli_and_a_persona_reads_it(tmp_path):
    """The commands a person uses, then a crew whose persona lists the store."""
    import json

    from command import ph

    (tmp_path / "pilothouse.toml").write_text(
        '[plugins.chroma.stores.handbook]\npath = "chroma"\ncollection = "handbook"\n'
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "returns.md").write_text("# Returns\n\nA Helio 30 can be returned within 30 days.\n")
    (docs / "warranty.md").write_text("# Warranty\n\nThe solar panel has a two-year warranty.\n")
    done = ph("ingest", "--into", "handbook", "docs", "--tag", "policy", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 files: 2 indexed" in done.stderr and "chroma store 'handbook'" in done.stderr
    again = ph("ingest", "--into", "handbook", "docs", "--tag", "policy", cwd=tmp_path)
    assert "0 indexed (0 chunks), 2 unchanged" in again.stderr
    found = ph("search", "--retriever", "handbook", "how long is the warranty", "-k", "1",
               "--tag", "policy", "--json", cwd=tmp_path)  # fmt: skip
    (best,) = json.loads(found.stdout)
    assert best["source"].endswith("docs/warranty.md") and "two-year" in best["text"]
    # the same files with metadata: rewritten (what a file carries is what it was last
    # ingested with), and searched by it
    labelled = ph("ingest", "--into", "handbook", "docs", "--tag", "policy", "--meta",
                  "team=support", cwd=tmp_path)  # fmt: skip
    assert "2 files: 2 indexed" in labelled.stderr, labelled.stderr
    mine = ph("search", "--retriever", "handbook", "warranty", "--where", "team=support",
              "--json", cwd=tmp_path)  # fmt: skip
    assert {p["metadata"]["team"] for p in json.loads(mine.stdout)} == {"support"}
    theirs = ph("search", "--retriever", "handbook", "warranty", "--where", "team=sales",
                "--json", cwd=tmp_path)  # fmt: skip
    assert json.loads(theirs.stdout) == []
    bad = ph("search", "--retriever", "handbook", "warranty", "--where", "team", cwd=tmp_path)
    assert bad.returncode == 2 and "--where 'team': write KEY=VALUE" in bad.stderr
    reserved = ph("ingest", "--into", "handbook", "docs", "--meta", "source=x", cwd=tmp_path)
    assert reserved.returncode != 0 and "metadata key 'source' is kept" in reserved.stderr
    missing = ph("ingest", "--into", "nowhere", "docs", cwd=tmp_path)
    assert missing.returncode == 3 and "no vector store named 'nowhere'" in missing.stderr

    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "desk.toml").write_text(
        '[flow]\nsteps = ["clerk"]\n[personas.clerk]\ninstructions = "Answer."\n'
        'retrievers = ["handbook"]\n'
        '[personas.clerk.retrieve_filters]\nmetadata = {team = "support"}\n'
    )
    run = ph("run", "desk", "--input", "Can I return a Helio 30?", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    events = json.loads(ph("show", json.loads(run.stdout)["run_id"], "--json",
                           cwd=tmp_path).stdout)["events"]  # fmt: skip
    (retrieval,) = [e for e in events if e["type"] == "retrieval"]
    assert retrieval["retriever"] == "handbook"
    assert retrieval["passages"][0]["source"].endswith("docs/returns.md")
    assert {p["metadata"]["team"] for p in retrieval["passages"]} == {"support"}


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    """A real Chroma server (``chroma run``, the Rust server in the chromadb wheel) on
    127.0.0.1: its URL."""
    with _chroma_run(tmp_path_factory.mktemp("chroma-server")) as (url, _server):
        yield url


def _free_port() -> int:
    import socket

    with socket.socket() as probe:  # a free port; chroma says nothing of one it picks
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _chroma_run(folder: Path, port: int | None = None):
    """``chroma run`` on ``folder`` (its data) and a port of 127.0.0.1, up once it answers
    its heartbeat: (URL, process)."""
    import shutil
    import subprocess
    import sys
    import time

    import httpx2

    # the chromadb wheel's command, beside this Python (a venv's bin may not be on PATH)
    beside = Path(sys.executable).parent / "chroma"
    chroma = str(beside) if beside.exists() else shutil.which("chroma")
    assert chroma, "the chromadb wheel's chroma command is not installed"
    port = port or _free_port()
    log = (folder / "server.log").open("a")
    server = subprocess.Popen([chroma, "run", "--path", str(folder / "data"), "--host",
                               "127.0.0.1", "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # up once it answers its heartbeat
            assert server.poll() is None, (folder / "server.log").read_text()
            assert time.monotonic() < deadline, "chroma run did not answer within 60 s"
            try:
                if httpx2.get(f"{url}/api/v2/heartbeat", timeout=2).status_code == 200:
                    break
            except httpx2.TransportError:
                time.sleep(0.1)
        yield url, server
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=30)
        log.close()


def test_a_chroma_server_killed_is_named_and_one_restarted_is_used_again(tmp_path):
    """kill -9 of a real Chroma server under a retriever: the search fails with the
    store's line; the server started again on its data, the same retriever finds again."""
    import signal

    import anyio

    from pilothouse import VectorStoreError
    from pilothouse.knowledge.ingesting import ingest_into
    from pilothouse.testing import CORPUS, StoreContract, ingest_corpus

    port = _free_port()
    store = {"url": f"http://127.0.0.1:{port}", "collection": "restarts", "timeout_s": 5}
    contract = StoreContract()
    retriever = contract._retriever(tmp_path, {"chroma": {"stores": {"docs": store}}})
    paths = [path for path, _ in ingest_corpus(CORPUS, tmp_path / "corpus")]
    try:
        with _chroma_run(tmp_path, port) as (_url, server):
            ingest_into(retriever, paths)
            before = anyio.run(lambda: retriever.search("solar panel watts", k=2))
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=30)
            with pytest.raises(VectorStoreError) as caught:
                anyio.run(lambda: retriever.search("solar panel watts", k=2))
        assert f"chroma store 'docs' at http://127.0.0.1:{port}" in str(caught.value)
        with _chroma_run(tmp_path, port):  # the same data, the same address
            after = anyio.run(lambda: retriever.search("solar panel watts", k=2))
    finally:
        anyio.run(retriever.aclose)
    assert before and [p.id for p in after] == [p.id for p in before]


class TestChromaServer(StoreContract):
    """The same contract against a real Chroma server over HTTP (a collection per test)."""

    @pytest.fixture(autouse=True)
    def _served(self, chroma_server):
        self.url = chroma_server

    def plugin_settings(self, folder: Path, embedder: str = "minilm") -> dict:
        import hashlib

        collection = "c" + hashlib.sha256(str(folder).encode()).hexdigest()[:16]
        store = {"url": self.url, "collection": collection, "embedder": embedder}
        return {"chroma": {"stores": {self.name: store}}}


class TestQdrant(StoreContract):
    """Qdrant's local mode (in the process, files in a folder); a Qdrant server address
    where nothing listens for the store that is down. No Qdrant server runs here (it is
    not on the package index), so a wrong key is not tested against one."""

    def plugin_settings(self, folder: Path, embedder: str = "minilm") -> dict:
        store = {"path": str(folder / "qdrant"), "collection": "contract", "embedder": embedder}
        return {"qdrant": {"stores": {self.name: store}}}

    def unreachable_settings(self, folder: Path) -> dict:
        store = {"url": "http://127.0.0.1:9", "collection": "contract", "timeout_s": 2}
        return {"qdrant": {"stores": {self.name: store}}}


class TestMilvus(StoreContract):
    """Milvus Lite (a file, in the process); a Milvus server address where nothing
    listens for the store that is down. No Milvus server runs here (it is a container
    image), so a wrong key is not tested against one."""

    def plugin_settings(self, folder: Path, embedder: str = "minilm") -> dict:
        store = {"uri": str(folder / "milvus.db"), "collection": "contract", "embedder": embedder}
        return {"milvus": {"stores": {self.name: store}}}

    def unreachable_settings(self, folder: Path) -> dict:
        store = {"uri": "http://127.0.0.1:9", "collection": "contract", "timeout_s": 2}
        return {"milvus": {"stores": {self.name: store}}}


async def test_a_step_whose_store_is_down_fails_with_the_stores_line(ph_runtime, ph_model):
    """The run's error names the store, where it is (never its key) and what to do."""
    from pilothouse.testing import crew_of, reply

    ph_model.enqueue(reply("unused"))
    key = "wv-secret-0123456789"
    store = {"url": "http://127.0.0.1:9", "grpc_url": "127.0.0.1:11", "api_key": key,
             "collection": "handbook", "timeout_s": 2}  # fmt: skip
    crew = crew_of({"type": "sequential", "steps": ["clerk"]}, {"clerk": {"retrievers": ["docs"]}})
    async with ph_runtime(plugins={"weaviate": {"stores": {"docs": store}}}) as rt:
        result = await rt.run(crew, "What is the return policy?")
        events = rt.store.events(result.run_id)
    assert result.status == "failed"
    assert "weaviate store 'docs' at http://127.0.0.1:9, collection 'handbook'" in result.error
    assert "is the server running at that address?" in result.error
    assert not any(key in e.model_dump_json() for e in events) and key not in result.error


def test_a_store_error_says_what_to_do_about_it():
    """The vendor's words, then the fix: a refused key, an unreachable server, an
    unencrypted key, another dimension."""
    from pilothouse_qdrant import StoreSettings
    from pilothouse_qdrant.store import QdrantStore

    from pilothouse import VectorStoreError, failures

    store = QdrantStore("docs", StoreSettings(url="http://qdrant.internal:6333"))
    cases = {
        "Unexpected Response: 401 (Unauthorized)": "the server refused the key",
        "[Errno 111] Connection refused": "is the server running at that address?",
        "Api key is used with an insecure connection.": "use an https url",
        "vector dimension error: expected 384, got 16": "another dimension: check embedder",
    }
    for words, fix in cases.items():
        with pytest.raises(VectorStoreError) as caught, failures(store, "search"):
            raise RuntimeError(words)
        assert str(caught.value).startswith(
            "qdrant store 'docs' at http://qdrant.internal:6333, collection 'pilothouse':"
            f" cannot search: {words}"
        ) and fix in str(caught.value)
    with pytest.raises(VectorStoreError) as caught, failures(store, "open"):
        raise ModuleNotFoundError("No module named 'qdrant_client'")
    assert "pip install 'pilothouse[qdrant]'" in str(caught.value)


def test_a_store_plugins_own_error_is_the_stores_line():
    """A plugin's prepare or query that raises outside its own guard (its client not
    installed, a bug) still gives the one line naming the store, never a traceback."""
    from types import SimpleNamespace

    import anyio

    from pilothouse import Embedder, StoreSettings, VectorStore, VectorStoreError
    from pilothouse.vectorstores import StoreRetriever

    class Missing(VectorStore):
        kind = "weaviate"

        def prepare(self, embedder, *, create):
            import weaviate_not_installed  # noqa: F401

        def query(self, vector, text, k, filters):
            raise AssertionError("never asked")

        digests = sources_under = replace = remove = query

    class Tiny(Embedder):
        name, dimension = "minilm", 2

        def embed(self, texts):
            return [[1.0, 0.0] for _ in texts]

    store = Missing("policies", StoreSettings(url="http://user:pw@10.0.0.5:8080"))
    retriever = StoreRetriever(store, {"minilm": SimpleNamespace(value=Tiny())})
    with pytest.raises(VectorStoreError) as caught:
        anyio.run(lambda: retriever.search("refunds", k=2))
    assert str(caught.value) == (
        "weaviate store 'policies' at http://10.0.0.5:8080, collection 'pilothouse': cannot"
        " open: No module named 'weaviate_not_installed' (its client is not installed: pip"
        " install 'pilothouse[weaviate]')"
    )
