"""What the plugins registered, each thing tagged with the plugin that registered it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .crew import Crew, Persona
from .embedding import Embedder
from .errors import NotFound, PluginError
from .guardrails import Guardrail
from .model import ModelProvider
from .observers import EventObserver
from .probes import AttributeSet, Payload
from .retrieval import Retriever
from .tools import Tool
from .toolsets import Toolset
from .vectorstores import StoreRetriever, VectorStore

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    """A registered thing and the plugin it came from."""

    value: T
    plugin: str


@dataclass
class Registry:
    """Everything available to runs and audits: providers, personas, tools, retrievers,
    guardrails, crews, embedders, attribute sets, payloads, observers, toolsets and
    vector stores."""

    models: dict[str, Entry[ModelProvider]] = field(default_factory=dict)
    personas: dict[str, Entry[Persona]] = field(default_factory=dict)
    tools: dict[str, Entry[Tool]] = field(default_factory=dict)
    retrievers: dict[str, Entry[Retriever]] = field(default_factory=dict)
    guardrails: dict[str, Entry[Guardrail]] = field(default_factory=dict)
    crews: dict[str, Entry[Crew]] = field(default_factory=dict)
    embedders: dict[str, Entry[Embedder]] = field(default_factory=dict)
    attribute_sets: dict[str, Entry[AttributeSet]] = field(default_factory=dict)
    payloads: dict[str, Entry[Payload]] = field(default_factory=dict)
    observers: dict[str, Entry[EventObserver]] = field(default_factory=dict)
    #: by prefix (``mcp`` for ``mcp:time/*``)
    toolsets: dict[str, Entry[Toolset]] = field(default_factory=dict)
    #: external vector stores, each also a retriever of the same name
    stores: dict[str, Entry[VectorStore]] = field(default_factory=dict)

    KINDS = ("models", "personas", "tools", "retrievers", "guardrails", "crews", "embedders",
             "attribute_sets", "payloads", "observers", "toolsets", "stores")  # fmt: skip

    def registrar(self, kind: str, plugin: str) -> Callable[..., None]:
        """The ``register`` callback handed to ``register_<kind>`` of ``plugin``."""
        table: dict[str, Entry[Any]] = getattr(self, kind)
        expected = _EXPECTED[kind]

        def register(thing: Any, name: str | None = None) -> None:
            if kind == "tools" and not isinstance(thing, Tool) and callable(thing):
                thing = Tool(thing, name=name)
            if not isinstance(thing, expected):
                raise PluginError(
                    plugin,
                    f"register_{kind} expects {expected.__name__}, got {type(thing).__name__}",
                )
            key = name or (thing.prefix if kind == "toolsets" else thing.name)
            if not key:
                raise PluginError(plugin, f"a {expected.__name__} registered without a name")
            if key in table or (kind == "stores" and key in self.retrievers):
                taken = table.get(key) or self.retrievers[key]
                raise PluginError(
                    plugin, f"{kind[:-1]} {key!r} is already registered by {taken.plugin!r}"
                )
            table[key] = Entry(thing, plugin)
            if kind == "stores":  # personas list it like any retriever
                self.retrievers[key] = Entry(StoreRetriever(thing, self.embedders), plugin)

        return register

    def get(self, kind: str, name: str) -> Entry[Any]:
        """The entry ``name`` of ``kind``; raise :class:`NotFound` listing what exists."""
        table: dict[str, Entry[Any]] = getattr(self, kind)
        try:
            return table[name]
        except KeyError:
            known = ", ".join(sorted(table)) or "none"
            raise NotFound(f"no {kind[:-1]} named {name!r} (registered: {known})") from None

    def by_plugin(self) -> dict[str, dict[str, list[str]]]:
        """For each plugin, the names it registered, by kind."""
        out: dict[str, dict[str, list[str]]] = {}
        for kind in self.KINDS:
            for name, entry in getattr(self, kind).items():
                out.setdefault(entry.plugin, {}).setdefault(kind, []).append(name)
        return out


_EXPECTED: dict[str, type] = {
    "models": ModelProvider,
    "personas": Persona,
    "tools": Tool,
    "retrievers": Retriever,
    "guardrails": Guardrail,
    "crews": Crew,
    "embedders": Embedder,
    "attribute_sets": AttributeSet,
    "payloads": Payload,
    "observers": EventObserver,
    "toolsets": Toolset,
    "stores": VectorStore,
}
