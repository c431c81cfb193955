"""A corpus for the knowledge benchmarks: real text, real MiniLM vectors, any size.

The real part is documentation: every public module, class and function docstring
of this Python's standard library and of packages pilothouse installs (numpy,
pydantic, textual...) (English prose with code words, a
Zipf-shaped vocabulary), cut into passages of 12-80 words and embedded with the
bundled MiniLM (cached under ``~/.cache/pilothouse-bench``, keyed by the Python
version). Passages are split once, by a fixed seed, into a corpus part and a
held-out part that only ever supplies queries.

To reach sizes beyond the real passages, a synthetic passage mixes two real ones:
its vector is ``normalize(a + 0.5 b + noise)`` (on the manifold MiniLM vectors live
on, clustered like them, never an exact copy) and its text interleaves spans of
both texts (the same word distribution). The first passages of every corpus are
the real ones, unchanged.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
import warnings
from pathlib import Path

import numpy as np

CACHE = Path.home() / ".cache" / "pilothouse-bench"
DIM = 384
SKIP = ("test", "idlelib", "tkinter", "turtle", "lib2to3", "ensurepip", "__main__", "antigravity",
        "this", "pydoc_data", "distutils", "msilib", "win", "_")  # fmt: skip


#: packages pilothouse itself installs, whose documentation joins the standard library's
PACKAGES = (
    "numpy",
    "pydantic",
    "httpx",
    "click",
    "jinja2",
    "textual",
    "rich",
    "markdown",
    "anyio",
    "pluggy",
    "jsonschema",
    "yaml",
    "pygments",
    "onnxruntime",
    "tokenizers",
)


def _modules() -> list[str]:
    names = sorted(
        m.name
        for m in pkgutil.iter_modules()
        if m.name in sys.stdlib_module_names and not m.name.startswith(SKIP)
    )
    for package in PACKAGES:
        try:
            root = importlib.import_module(package)
        except ImportError:
            continue
        names.append(package)
        for info in pkgutil.walk_packages(getattr(root, "__path__", []), package + "."):
            if not any(part.startswith(SKIP) for part in info.name.split(".")[1:]):
                names.append(info.name)
    return names


def _docstrings() -> list[str]:
    seen: set[str] = set()
    docs: list[str] = []
    warnings.simplefilter("ignore")
    for name in _modules():
        try:
            module = importlib.import_module(name)
        except BaseException:  # a module this platform lacks, or one that will not import
            continue
        objects = [module] + [v for k, v in sorted(vars(module).items()) if not k.startswith("_")]
        for obj in objects:
            members = [obj] + (
                [v for k, v in sorted(vars(obj).items()) if not k.startswith("_")]
                if inspect.isclass(obj) else []
            )  # fmt: skip
            for member in members:
                doc = (
                    inspect.getdoc(member) if callable(member) or inspect.ismodule(member) else None
                )
                if doc and doc not in seen:
                    seen.add(doc)
                    docs.append(doc)
    return docs


def _passages(docs: list[str]) -> list[str]:
    out = []
    for doc in docs:
        words = re.sub(r"\s+", " ", doc).split(" ")
        for start in range(0, len(words), 80):
            piece = words[start : start + 80]
            if len(piece) >= 12:
                out.append(" ".join(piece))
    return out


def real() -> tuple[list[str], np.ndarray]:
    """The real passages and their MiniLM vectors (computed once, then cached)."""
    key = f"py{sys.version_info.major}{sys.version_info.minor}"
    cache = CACHE / f"stdlib-{key}.npz"
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        return [str(t) for t in data["texts"]], data["vectors"]
    from pilothouse_knowledge import MiniLM

    texts = _passages(_docstrings())
    minilm = MiniLM()
    vectors = np.zeros((len(texts), DIM), dtype=np.float32)
    for start in range(0, len(texts), 64):
        vectors[start : start + 64] = minilm.embed(texts[start : start + 64])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, texts=np.array(texts), vectors=vectors)
    return texts, vectors


class Corpus:
    """``size`` passages (texts and unit vectors) and held-out queries."""

    def __init__(self, size: int, *, queries: int = 200, seed: int = 7) -> None:
        texts, vectors = real()
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(texts))
        held = order[:queries]
        kept = order[queries:]
        #: held-out queries: a few content words of a passage the corpus lacks, its vector
        self.queries = [(" ".join(_keywords(texts[i], rng)), vectors[i]) for i in held]
        self.size = size
        self._texts = [texts[i] for i in kept]
        self._vectors = vectors[kept]
        self._seed = seed

    def batches(self, batch: int = 20_000):
        """(first index, texts, vectors) in batches: the real passages first, then mixes."""
        rng = np.random.default_rng(self._seed + 1)
        n_real = len(self._texts)
        for start in range(0, self.size, batch):
            stop = min(self.size, start + batch)
            idx = np.arange(start, stop)
            real_part = idx < n_real
            a = np.where(real_part, idx, rng.integers(n_real, size=len(idx)))
            b = rng.integers(n_real, size=len(idx))
            vectors = self._vectors[a].copy()
            mix = ~real_part
            noise = rng.standard_normal((int(mix.sum()), DIM)).astype(np.float32) * 0.02
            vectors[mix] = vectors[mix] + 0.5 * self._vectors[b[mix]] + noise
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            texts = [
                self._texts[i] if r else _interleave(self._texts[i], self._texts[j], rng)
                for i, j, r in zip(a.tolist(), b.tolist(), real_part.tolist(), strict=True)
            ]
            yield start, texts, vectors


def _keywords(text: str, rng: np.random.Generator) -> list[str]:
    words = [w for w in re.findall(r"[A-Za-z]{4,}", text)]
    picks = rng.choice(len(words), size=min(4, len(words)), replace=False) if words else []
    return [words[i].lower() for i in sorted(picks)]


def _interleave(first: str, second: str, rng: np.random.Generator) -> str:
    a, b = first.split(" "), second.split(" ")
    cut = int(rng.integers(len(a) // 3, 2 * len(a) // 3 + 1))
    return " ".join(a[:cut] + b[: max(10, len(b) // 2)])
