"""pilothouse.testing: a kit for testing plugins, loaded by pytest wherever pilothouse
is installed (entry point ``pytest11``).

Fixtures:

- ``ph_workspace``: an empty project folder as the current directory, no
  ``PILOTHOUSE_*`` variable leaking in from outside;
- ``ph_model``: a scripted model (``scripted:<any name>``) that answers from a queue
  (:func:`reply`, :func:`call` for a tool call) and records every request;
- ``ph_runtime``: ``ph_runtime(*plugins, **settings)`` builds a
  :class:`pilothouse.Runtime` on the workspace, with the scripted model as default.

Helpers: :func:`crew_of` (a crew from plain data, as a crew file gives it) and
:func:`run_crew` (run one, get the result and the run's events back).

Contract suites a third-party implementation subclasses to show it behaves like the
built-in ones (the bundled plugins pass them): :class:`RetrieverContract`,
:class:`ToolContract`, :class:`GuardrailContract`. Each is a plain pytest class:
subclass it in a test module (its name starting with ``Test``) and fill in what it
asks for.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from . import (
    BaseEvent,
    Crew,
    Filters,
    Guardrail,
    GuardrailContext,
    Model,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    Passage,
    PilothouseError,
    Retriever,
    RunResult,
    Runtime,
    Span,
    Tool,
    ToolCall,
    ToolError,
    Usage,
    VectorStoreError,
    Verdict,
    hookimpl,
    load_settings,
)
from .embedding import Embedder
from .knowledge.ingesting import ingest_into

# -- a scripted model -----------------------------------------------------------------

Reply = ModelResponse | Exception | Callable[[ModelRequest], ModelResponse]
_ids = itertools.count(1)


def reply(text: str, tokens: tuple[int, int] = (10, 5)) -> ModelResponse:
    """A model's plain answer."""
    return ModelResponse(text=text, usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]))


def call(tool: str, **arguments: Any) -> ModelResponse:
    """A model's reply asking for one call of ``tool`` with ``arguments``."""
    request = ToolCall(id=f"call_{next(_ids)}", name=tool, arguments=json.dumps(arguments))
    return ModelResponse(tool_calls=[request], usage=Usage(input_tokens=10, output_tokens=5))


class ScriptedModel(Model):
    """Answers from its plugin's queue (a default answer when it is empty)."""

    provider = "scripted"

    def __init__(self, name: str, plugin: ScriptedPlugin) -> None:
        self.name = name
        self.plugin = plugin

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """The next scripted reply (an exception in the queue is raised)."""
        self.plugin.requests.append(request)
        if not self.plugin.queue:
            return reply(f"default answer {len(self.plugin.requests)}")
        answer = self.plugin.queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer

    def estimate_cost(self, input_tokens: int, output_tokens: int) -> float:
        """A price of 0.001 USD a token, in and out: budgets can be tested with it."""
        return (input_tokens + output_tokens) * 0.001


class ScriptedPlugin(ModelProvider):
    """A plugin object with the ``scripted`` provider; tests queue replies on it."""

    __name__ = "scripted"
    name = "scripted"

    def __init__(self) -> None:
        self.queue: list[Reply] = []
        self.requests: list[ModelRequest] = []

    def enqueue(self, *replies: Reply) -> None:
        """Queue replies, answered in order."""
        self.queue.extend(replies)

    def model(self, name: str) -> Model:
        """Any name: every scripted model shares the queue."""
        return ScriptedModel(name, self)

    def default_model(self) -> str:
        """``scripted`` alone means ``scripted:model``."""
        return "model"

    @hookimpl
    def register_models(self, register: Any) -> None:
        """Register itself as the ``scripted`` provider."""
        register(self)


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def ph_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as the current directory, no ``PILOTHOUSE_*`` variable."""
    for key in list(os.environ):
        if key.upper().startswith("PILOTHOUSE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def ph_model() -> ScriptedPlugin:
    """The scripted model (``scripted:<any>``): queue replies with ``enqueue``."""
    return ScriptedPlugin()


@pytest.fixture
def ph_runtime(ph_workspace: Path, ph_model: ScriptedPlugin) -> Callable[..., Runtime]:
    """``ph_runtime(*plugins, **settings)``: a Runtime on the workspace with these plugin
    objects and the scripted model, which is the default model."""

    def make(*plugins: Any, **settings: Any) -> Runtime:
        settings.setdefault("default_model", "scripted")
        return Runtime(load_settings(**settings), plugins=[ph_model, *plugins])

    return make


def crew_of(flow: dict[str, Any], personas: dict[str, dict[str, Any]], **extra: Any) -> Crew:
    """A crew from plain data, as a crew file gives it: ``crew_of({"type":
    "sequential", "steps": ["a"]}, {"a": {"instructions": "..."}})``."""
    return Crew.model_validate(
        {"name": extra.pop("name", "test"), "flow": flow, "personas": personas, **extra}
    )


async def run_crew(
    runtime: Runtime, crew: Crew | str, text: str
) -> tuple[RunResult, list[BaseEvent]]:
    """Run a crew in an entered runtime; return how it ended and its events, in order."""
    result = await runtime.run(crew, text)
    store = runtime.store
    events = store.events(result.run_id) if store is not None else []
    return result, events


# -- contract suites -------------------------------------------------------------------


class Document(BaseModel):
    """A document a retriever under test is given, as its store would hold it."""

    id: str
    text: str
    source: str
    tags: list[str] = []
    #: what it is ingested with (``ingest --meta KEY=VALUE``)
    metadata: dict[str, str] = {}


#: the fixed corpus of :class:`RetrieverContract`
CORPUS: list[Document] = [
    Document(id="panel", source="docs/helio-panel.md", tags=["product"],
             metadata={"region": "us"},
             text="The Helio 30 backpack carries a flexible 12-watt solar panel on its lid."),
    Document(id="battery", source="docs/helio-battery.md", tags=["product"],
             metadata={"region": "eu"},
             text="Its battery holds 10,000 mAh and charges a phone about twice."),
    Document(id="market", source="research/market-2026.md", tags=["research"],
             metadata={"region": "eu"},
             text="Day hikers aged 25 to 44 are the fastest-growing outdoor segment in Europe."),
    Document(id="returns", source="policies/returns.md", tags=["policy"],
             metadata={"region": "eu"},
             text="Customers may return unused gear within 30 days for a full refund."),
    Document(id="unicode", source="docs/helio-deutsch.md", tags=["product"],
             metadata={"region": "de"},
             text="Der Rucksack wiegt 1,4 kg, für Wanderer gedacht; Größe 30 Liter. 登山用。"),
]  # fmt: skip


def _document(passage: Passage) -> Document:
    """The corpus document a passage came from: its source names the document's (a path
    may be made absolute by the store)."""
    found = [d for d in CORPUS if passage.source.endswith(d.source)]
    assert found, f"passage {passage.id} names no document of the corpus: {passage.source!r}"
    return found[0]


class RetrieverContract:
    """What every retriever does, checked on a fixed corpus (:data:`CORPUS`).

    Subclass it and implement :meth:`make_retriever`; implement
    :meth:`unreachable_retriever` too for a retriever backed by a service (a store
    that is down must fail fast, saying which)."""

    #: how long a search may take before the suite calls it hung
    timeout_s = 60.0

    def make_retriever(self, documents: list[Document], folder: Path) -> Retriever:
        """A retriever over exactly ``documents`` (``folder``: a fresh folder for its
        files, if it needs any). May be a coroutine function."""
        raise NotImplementedError("make_retriever: a retriever over the given documents")

    def unreachable_retriever(self, folder: Path) -> Retriever | None:
        """A retriever whose store cannot be reached (None: it has no store to lose)."""
        return None

    def _search(self, folder: Path, documents: list[Document], query: str,
                **options: Any) -> list[Passage]:  # fmt: skip
        async def go() -> list[Passage]:
            made = self.make_retriever(documents, folder)
            retriever = await made if inspect.isawaitable(made) else made
            try:
                with anyio.fail_after(self.timeout_s):
                    return await retriever.search(query, **options)
            finally:
                await retriever.aclose()

        return anyio.run(go)

    def test_the_passage_that_answers_comes_first(self, tmp_path: Path) -> None:
        found = self._search(tmp_path, CORPUS, "how many watts is the solar panel", k=3)
        assert found, "nothing found for a query the corpus answers"
        assert "12-watt" in found[0].text

    def test_k_bounds_the_answer(self, tmp_path: Path) -> None:
        assert len(self._search(tmp_path, CORPUS, "Helio backpack battery", k=2)) <= 2
        assert len(self._search(tmp_path, CORPUS, "Helio backpack battery", k=1)) == 1

    def test_passages_say_where_they_come_from(self, tmp_path: Path) -> None:
        found = self._search(tmp_path, CORPUS, "battery mAh phone", k=3)
        assert found and all(p.id and p.text and _document(p) for p in found), found
        assert _document(found[0]).id == "battery"
        scores = [p.score for p in found]
        assert scores == sorted(scores, reverse=True), "passages must come best first"

    def test_filters_apply_before_the_top_k(self, tmp_path: Path) -> None:
        # "Helio" matches three product documents better than the research one: a filter
        # applied after the top 1 would leave nothing
        only = Filters(source="research/")
        found = self._search(tmp_path, CORPUS, "Helio backpack hikers", k=1, filters=only)
        assert [_document(p).id for p in found] == ["market"], found
        tagged = self._search(tmp_path, CORPUS, "refund", k=5, filters=Filters(tag="product"))
        assert all("product" in _document(p).tags for p in tagged), tagged

    def test_metadata_filters_apply_before_the_top_k(self, tmp_path: Path) -> None:
        # unfiltered, the panel (region us) answers this first
        eu = Filters(metadata={"region": "eu"})
        found = self._search(tmp_path, CORPUS, "Helio solar panel on the lid", k=1, filters=eu)
        assert len(found) == 1 and _document(found[0]).metadata["region"] == "eu", found
        both = Filters(tag="product", metadata={"region": "eu"})
        found = self._search(tmp_path, CORPUS, "Helio backpack", k=5, filters=both)
        assert [_document(p).id for p in found] == ["battery"], found
        nowhere = Filters(metadata={"region": "mars"})
        assert self._search(tmp_path, CORPUS, "Helio backpack", k=5, filters=nowhere) == []

    def test_unicode_goes_in_and_comes_out_whole(self, tmp_path: Path) -> None:
        found = self._search(tmp_path, CORPUS, "Rucksack für Wanderer Größe", k=2)
        assert found and "für Wanderer" in found[0].text and "登山用" in found[0].text

    def test_a_large_passage_is_found_whole(self, tmp_path: Path) -> None:
        filler = " ".join(f"Line {i} of the field notes about trails and weather." for i in
                          range(200))  # fmt: skip
        big = Document(id="big", source="notes/field.md",
                       text=f"{filler} The rare word xylocarpa appears once. {filler}")  # fmt: skip
        found = self._search(tmp_path, [*CORPUS, big], "xylocarpa", k=3)
        assert (
            found and found[0].source.endswith("notes/field.md") and ("xylocarpa" in found[0].text)
        )

    def test_an_empty_collection_gives_nothing_or_says_so(self, tmp_path: Path) -> None:
        try:
            found = self._search(tmp_path, [], "anything at all", k=3)
        except PilothouseError as exc:  # saying so is fine too: the message must name it
            assert str(exc), "an error for an empty collection must say why"
            return
        assert found == []

    def test_a_store_that_is_down_fails_fast_and_says_which(self, tmp_path: Path) -> None:
        retriever = self.unreachable_retriever(tmp_path)
        if retriever is None:  # nothing to lose: a retriever with no store passes as is
            return

        async def go() -> None:
            with anyio.fail_after(self.timeout_s):
                await retriever.search("anything", k=3)

        with pytest.raises(PilothouseError) as caught:
            anyio.run(go)
        assert str(caught.value), "the error must say which store is down"


class _Hashed(Embedder):
    """A tiny embedder of another dimension (words hashed into 16 buckets): what a store
    built with MiniLM must refuse to be searched with."""

    name = "hashed16"
    dimension = 16

    def embed(self, texts: list[str]) -> list[list[float]]:  # type: ignore[override]
        """Unit vectors of hashed word counts."""
        import hashlib
        import math

        out = []
        for text in texts:
            counts = [0.0] * self.dimension
            for word in text.lower().split():
                counts[hashlib.sha256(word.encode()).digest()[0] % self.dimension] += 1
            norm = math.sqrt(sum(c * c for c in counts)) or 1.0
            out.append([c / norm for c in counts])
        return out


class _HashedPlugin:
    __name__ = "contract-embedders"

    @hookimpl
    def register_embedders(self, register: Any) -> None:
        register(_Hashed())


class StoreContract(RetrieverContract):
    """What every external vector store does, on top of :class:`RetrieverContract`:
    ``pilothouse ingest --into`` twice changes nothing, a changed file replaces its
    chunks and a removed one goes, a collection built by another embedder is refused
    with a line that says so, and a wrong key is named.

    Subclass it and implement :meth:`plugin_settings`: the ``[plugins]`` settings that
    configure the store named :attr:`name` (with ``embedder``); and
    :meth:`unreachable_settings` / :meth:`wrong_key_settings` for a store on a server."""

    #: the store's name in the settings (the retriever's)
    name = "docs"

    def plugin_settings(self, folder: Path, embedder: str = "minilm") -> dict[str, Any]:
        """``plugins=`` settings configuring :attr:`name` with ``embedder``, its data
        (for an embedded store) under ``folder``."""
        raise NotImplementedError("plugin_settings: the settings of a store named self.name")

    def unreachable_settings(self, folder: Path) -> dict[str, Any] | None:
        """Settings of the store at an address where nothing answers (None: embedded)."""
        return None

    def wrong_key_settings(self, folder: Path) -> dict[str, Any] | None:
        """Settings of the store with a key its server refuses (None: no keys)."""
        return None

    def _retriever(self, folder: Path, plugins: dict[str, Any]) -> Retriever:
        settings = load_settings(workspace=folder / "ws", plugins=plugins)
        runtime = Runtime(settings, plugins=[_HashedPlugin()], log_events=False)
        return runtime.registry.get("retrievers", self.name).value

    def make_retriever(self, documents: list[Document], folder: Path) -> Retriever:
        """The store, filled the way ``pilothouse ingest --into`` fills it."""
        retriever = self._retriever(folder, self.plugin_settings(folder))
        for path, document in ingest_corpus(documents, folder / "corpus"):
            ingest_into(retriever, [path], tags=document.tags,  # type: ignore[arg-type]
                        metadata=document.metadata)  # fmt: skip
        return retriever

    def unreachable_retriever(self, folder: Path) -> Retriever | None:
        """The store where nothing answers."""
        settings = self.unreachable_settings(folder)
        return None if settings is None else self._retriever(folder, settings)

    def test_ingesting_twice_changes_nothing(self, tmp_path: Path) -> None:
        files = [path for path, _ in ingest_corpus(CORPUS, tmp_path / "corpus")]
        with self._open(tmp_path) as retriever:
            first = ingest_into(retriever, [tmp_path / "corpus"])  # type: ignore[arg-type]
            before = self._found(retriever)
            again = ingest_into(retriever, [tmp_path / "corpus"])  # type: ignore[arg-type]
            assert (first.updated, again.updated, again.unchanged) == (
                len(files), 0, len(files)
            )  # fmt: skip
            assert self._found(retriever) == before

    def test_a_changed_file_replaces_its_chunks_and_a_removed_one_goes(
        self, tmp_path: Path
    ) -> None:
        corpus = tmp_path / "corpus"
        files = {d.id: path for path, d in ingest_corpus(CORPUS, corpus)}
        with self._open(tmp_path) as retriever:
            ingest_into(retriever, [corpus])  # type: ignore[arg-type]
            files["panel"].write_text("# panel\n\nThe lid now holds a 15-watt panel.\n")
            files["battery"].unlink()
            report = ingest_into(retriever, [corpus])  # type: ignore[arg-type]
            assert (report.updated, report.removed) == (1, 1)
            texts = " ".join(p.text for p in self._found(retriever))
        assert "15-watt" in texts and "12-watt" not in texts and "10,000 mAh" not in texts

    def test_a_collection_of_another_embedder_is_refused(self, tmp_path: Path) -> None:
        next(ingest_corpus(CORPUS[:1], tmp_path / "corpus"))
        with self._open(tmp_path) as filled:
            ingest_into(filled, [tmp_path / "corpus"])  # type: ignore[arg-type]
        with (
            self._open(tmp_path, embedder="hashed16") as other,
            pytest.raises(VectorStoreError) as caught,
        ):
            anyio.run(lambda: other.search("solar panel", k=2))
        assert "dimension" in str(caught.value) and "minilm" in str(caught.value)

    def test_passages_carry_the_metadata_they_were_ingested_with(self, tmp_path: Path) -> None:
        found = self._search(tmp_path, CORPUS, "Helio backpack battery", k=5)
        assert found and all(p.metadata.get("region") == _document(p).metadata["region"]
                             for p in found), found  # fmt: skip

    def test_a_wrong_key_is_named(self, tmp_path: Path) -> None:
        settings = self.wrong_key_settings(tmp_path)
        if settings is None:  # a store with no keys to get wrong passes as is
            return
        retriever = self._retriever(tmp_path, settings)
        try:
            with pytest.raises(PilothouseError) as caught:
                anyio.run(lambda: retriever.search("anything", k=1))
        finally:
            anyio.run(retriever.aclose)
        assert "key" in str(caught.value).lower()

    @contextlib.contextmanager
    def _open(self, folder: Path, embedder: str = "minilm") -> Iterator[Retriever]:
        """The store's retriever, closed on leaving (an embedded store may hold a lock
        on its folder)."""
        retriever = self._retriever(folder, self.plugin_settings(folder, embedder=embedder))
        try:
            yield retriever
        finally:
            anyio.run(retriever.aclose)

    def _found(self, retriever: Retriever) -> list[Passage]:
        queries = ("solar panel watts", "battery phone charge", "hikers market")
        return [p for q in queries for p in anyio.run(lambda q=q: retriever.search(q, k=10))]


class ToolContract:
    """What every tool does: a name and a description a model can use, a JSON Schema
    for its arguments, a result for good arguments and a clear error for bad ones.

    Subclass it and set :attr:`tool`, :attr:`good_arguments` and :attr:`bad_arguments`
    (a JSON object the schema refuses)."""

    tool: Tool
    good_arguments: dict[str, Any] = {}
    bad_arguments: dict[str, Any] = {"not_an_argument": True}

    def test_it_tells_a_model_what_it_does(self) -> None:
        spec = self.tool.spec()
        assert spec.name == self.tool.name and len(spec.description.split()) >= 2
        assert spec.parameters.get("type") == "object"
        json.dumps(spec.parameters)  # offered to the model as JSON

    def test_good_arguments_give_a_result(self) -> None:
        arguments = self.tool.parse_arguments(json.dumps(self.good_arguments))
        result = anyio.run(lambda: self.tool.invoke(arguments))
        assert result is not None
        json.dumps(result, default=str)  # a model gets it as text

    def test_bad_arguments_are_refused_with_a_reason(self) -> None:
        with pytest.raises(ToolError) as caught:
            self.tool.parse_arguments(json.dumps(self.bad_arguments))
        assert self.tool.name in str(caught.value)
        with pytest.raises(ToolError):
            self.tool.parse_arguments("{not json")


class GuardrailContract:
    """What every guardrail does: passes clean text, stops or flags what it is for with
    a reason, points at it with spans inside the text, gives the same verdict twice,
    and copes with empty, unicode and long text.

    Subclass it and set :attr:`guardrail`, :attr:`clean_text` and :attr:`caught_text`
    (and :attr:`stage` or :attr:`evidence` when the guardrail needs them)."""

    guardrail: Guardrail
    clean_text = "The backpack weighs 1.4 kg and holds 30 litres."
    caught_text = ""
    stage = "output"
    evidence: list[str] = []

    def _check(self, text: str) -> Verdict:
        context = GuardrailContext(run_id="run", step_id="1", persona="writer",
                                   stage=self.stage, crew="contract",  # type: ignore[arg-type]
                                   evidence=list(self.evidence))  # fmt: skip

        async def go() -> Verdict:
            verdict = self.guardrail.check(text, context)
            return await verdict if inspect.isawaitable(verdict) else verdict

        verdict = anyio.run(go)
        assert isinstance(verdict, Verdict), f"check() returned {type(verdict).__name__}"
        return verdict

    def test_clean_text_passes(self) -> None:
        assert self._check(self.clean_text).action == "pass"

    def test_what_it_is_for_is_caught_with_a_reason(self) -> None:
        verdict = self._check(self.caught_text)
        assert verdict.action != "pass" and verdict.reason
        if verdict.action == "fix":
            assert verdict.replacement is not None and verdict.replacement != self.caught_text

    def test_spans_point_inside_the_text(self) -> None:
        verdict = self._check(self.caught_text)
        for span in verdict.spans:
            assert isinstance(span, Span) and 0 <= span.start < span.end <= len(self.caught_text)
            assert self.caught_text[span.start : span.end].strip(), span

    def test_the_same_text_gets_the_same_verdict(self) -> None:
        first, second = self._check(self.caught_text), self._check(self.caught_text)
        assert (first.action, first.reason, first.spans) == (second.action, second.reason,
                                                             second.spans)  # fmt: skip

    def test_empty_unicode_and_long_text_do_not_break_it(self) -> None:
        for text in ("", "Größe 30 Liter, 登山用 🎒", self.clean_text * 2000):
            self._check(text)


def ingest_corpus(documents: list[Document], folder: Path) -> Iterator[tuple[Path, Document]]:
    """Write ``documents`` as Markdown files under ``folder`` at their sources (what a
    retriever over a folder of files is made from); yield each file with its document."""
    for document in documents:
        path = folder / document.source
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {document.id}\n\n{document.text}\n", encoding="utf-8")
        yield path, document
