"""The plugin contract: every hook pilothouse calls, and what it expects.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose
names match the hooks below. Publish it with an entry point in the group
``pilothouse``::

    [project.entry-points.pilothouse]
    my_plugin = "my_plugin"

or name its module in the ``plugin_modules`` setting (``PILOTHOUSE_PLUGIN_MODULES``).
An implementation may accept fewer arguments than the hook offers (pluggy passes
only the ones it names), so hooks can grow without breaking plugins.

The ``register_*`` hooks receive a ``register`` callback rather than
returning values: pilothouse tags everything registered with the plugin that
registered it, so ``pilothouse plugins`` can list it and an error inside it
names the plugin. A plugin that raises while registering is reported and
skipped; the other plugins still load.
"""

from __future__ import annotations

from typing import Any

import pluggy

PROJECT = "pilothouse"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- what a plugin contributes ------------------------------------------------


@hookspec
def register_settings(register: Any) -> None:
    """Register the settings of a section of the workspace's configuration.

    Call ``register(section, model)`` with a section name and a pydantic model class
    (give every field a default). The section is ``[plugins.SECTION]`` in
    ``pilothouse.toml`` and ``PILOTHOUSE_PLUGINS__SECTION__FIELD`` in the environment,
    with the precedence of the core settings (the environment over the workspace's file
    over the project's file over the defaults). It is validated when the plugin loads:
    a bad value is one line naming where it came from, the section and the field, and
    the plugin does not load (the others do). Read it in any other hook with
    ``settings.section(SECTION)``. Declare secrets as ``pydantic.SecretStr``: they are
    never shown. ``pilothouse config`` shows every section with its effective values.

    :param register: ``register(section: str, model: type[pydantic.BaseModel]) -> None``
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``pilothouse`` command line.

    ``cli`` is the :class:`click.Group` of ``pilothouse``: decorate functions with
    ``@cli.command()`` (or add a group of your own with ``@cli.group()``), as llm and
    datasette plugins do. A command reads the workspace's settings with
    :func:`pilothouse.load_settings`. ``pilothouse plugins`` lists the commands each
    plugin added.

    :param cli: the ``pilothouse`` :class:`click.Group`
    """


@hookspec
def register_models(register: Any, settings: Any) -> None:
    """Register model providers.

    Call ``register(provider)`` with a :class:`pilothouse.ModelProvider`; its
    ``name`` is the prefix personas use in ``provider:model`` ids, and its
    ``model(name)`` returns a :class:`pilothouse.Model`.

    :param register: ``register(provider: ModelProvider) -> None``
    :param settings: the effective :class:`pilothouse.Settings`
    """


@hookspec
def register_personas(register: Any, settings: Any) -> None:
    """Register personas that crews can name.

    Call ``register(persona)`` with a :class:`pilothouse.Persona`.

    :param register: ``register(persona: Persona) -> None``
    :param settings: the effective :class:`pilothouse.Settings`
    """


@hookspec
def register_tools(register: Any, settings: Any) -> None:
    """Register tools that personas can list in ``tools``.

    Call ``register(func_or_tool, name=None)`` with a typed function or a
    :class:`pilothouse.Tool` (see :func:`pilothouse.tool`). The function's
    type hints become the JSON schema the model sees; arguments are validated
    before the call and a bad call is reported back to the model. A synchronous
    function runs in a thread of its own (``@tool(blocking=False)`` for a quick
    one): a run that times out or is cancelled meanwhile ends at once.

    :param register: ``register(tool: Tool | Callable, name: str | None = None) -> None``
    :param settings: the effective :class:`pilothouse.Settings`
    """


@hookspec
def register_toolsets(register: Any, settings: Any) -> None:
    """Register toolsets: tools found at run time (an MCP server's, a remote API's).

    Call ``register(toolset)`` with a :class:`pilothouse.Toolset`; its ``prefix``
    is what personas write before a colon in their tools (``"mcp:time/*"``), and its
    ``resolve(pattern)`` returns the :class:`pilothouse.Tool` objects a pattern names.

    :param register: ``register(toolset: Toolset) -> None``
    :param settings: the effective :class:`pilothouse.Settings`
    """


@hookspec
def register_retrievers(register: Any, settings: Any) -> None:
    """Register retrievers that personas can list in ``retrievers``.

    Call ``register(retriever)`` with a :class:`pilothouse.Retriever`, whose
    async ``search(query, k=...)`` returns ranked :class:`pilothouse.Passage`
    (wrap blocking work in ``await pilothouse.run_blocking(...)``). Passages are
    data for the model, never instructions: guardrails can screen them first.

    :param register: ``register(retriever: Retriever) -> None``
    :param settings: the effective :class:`pilothouse.Settings`
    """


@hookspec
def register_guardrails(register: Any, settings: Any) -> None:
    """Register guardrails that personas can apply to their input or output.

    Call ``register(guardrail)`` with a :class:`pilothouse.Guardrail`, whose
    ``check(text, context)`` returns a :class:`pilothouse.Verdict`:
    ``pass``, ``fix`` (with ``replacement``), ``flag`` or ``block``. A sync
    ``check`` runs on the event loop, so it must be quick: make it ``async``
    for anything that waits (a remote service, a model), or set the class
    attribute ``blocking = True`` to have it run in a thread of its own.

    :param register: ``register(guardrail: Guardrail) -> None``
    :param settings: the effective :class:`pilothouse.Settings`
    """


@hookspec
def register_crews(register: Any, settings: Any) -> None:
    """Register crews that ``pilothouse run NAME`` can start.

    Call ``register(crew)`` with a :class:`pilothouse.Crew`. Personas the
    crew's flow names are looked up in ``crew.personas`` first, then among
    registered personas.

    :param register: ``register(crew: Crew) -> None``
    :param settings: the effective :class:`pilothouse.Settings`
    """


@hookspec
def register_stores(register: Any, settings: Any) -> None:
    """Register collections of external vector databases as retrievers.

    Call ``register(store)`` with a :class:`pilothouse.VectorStore` (one per name a
    user configured): personas list its ``name`` in ``retrievers`` like ``knowledge``,
    ``pilothouse ingest --into NAME`` writes into it and ``pilothouse search
    --retriever NAME`` queries it. Its queries are embedded by its ``embedder``.

    :param register: ``register(store: VectorStore) -> None``
    :param settings: the effective :class:`pilothouse.Settings`
    """


@hookspec
def register_embedders(register: Any, settings: Any) -> None:
    """Register embedders the knowledge base can index and search with.

    Call ``register(embedder)`` with a :class:`pilothouse.embedding.Embedder`
    (a ``name``, a ``dimension`` and ``embed(texts) -> vectors``). A
    collection remembers the embedder and dimension it was built with;
    searching it with another is refused with a clear error.

    :param register: ``register(embedder: Embedder) -> None``
    :param settings: the effective :class:`pilothouse.Settings`
    """


@hookspec
def register_attribute_sets(register: Any, settings: Any) -> None:
    """Register protected attributes that ``pilothouse audit bias`` can swap.

    Call ``register(attribute_set)`` with a :class:`pilothouse.probes.AttributeSet`:
    a ``name`` (what a cases file puts in ``attribute``) and ``groups``, each
    group a mapping of placeholder to values, e.g. ``{"female": {"name":
    ["Anna Berg", ...], "pronoun": ["she"]}, "male": {...}}``. Every group must
    fill the same placeholders. :func:`pilothouse.probes.load_attribute_sets`
    reads them from a TOML file.

    :param register: ``register(attribute_set: AttributeSet) -> None``
    :param settings: the effective :class:`pilothouse.Settings`
    """


@hookspec
def register_payloads(register: Any, settings: Any) -> None:
    """Register hostile inputs for ``pilothouse audit adversarial``.

    Call ``register(payload)`` with a :class:`pilothouse.probes.Payload` (``id``,
    ``category`` such as ``prompt-injection``, ``jailbreak``,
    ``data-exfiltration`` or ``tool-misuse``, and ``text``). The suite sends
    each one as a run's input, hidden inside a retrieved document and inside an
    outside tool's result.
    :func:`pilothouse.probes.load_payloads` reads ``[[payload]]`` tables from a
    TOML file.

    :param register: ``register(payload: Payload) -> None``
    :param settings: the effective :class:`pilothouse.Settings`
    """


# -- watching runs --------------------------------------------------------------


@hookspec
def register_observers(register: Any, settings: Any) -> None:
    """Register observers of every run's events that need the settings or a lifecycle
    (an exporter that sends where the settings say, and flushes when the runtime closes).

    Register only what is on: an exporter left unconfigured registers nothing.

    :param register: ``register(observer: pilothouse.EventObserver) -> None``
    :param settings: the effective :class:`pilothouse.Settings`
    """


@hookspec
def on_event(event: Any) -> Any:
    """Observe every event of every run as it is logged (exporters, notifiers).

    Called in the event loop, right after the event is queued for the store:
    return quickly. Return an awaitable to do slow work (it runs in the
    background). An exception is logged with the plugin's name and never
    reaches the run.

    :param event: a :class:`pilothouse.events.BaseEvent` subclass
    """
