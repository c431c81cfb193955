"""The workspace: plugins, crews, config, memory and the knowledge base."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from ..errors import PilothouseError
from ..retrieval import Filters, search_within
from ..runtime import Runtime
from .base import Context, Exit, cli, pass_context
from .viewing import _short, _since


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def plugins(obj: Context, as_json: bool) -> None:
    """List every plugin: what it registered, its settings section, the commands it
    added, and why it did not load (exit 3 when a plugin's settings are wrong)."""
    rt = Runtime(obj.settings, log_events=False, strict=False)
    rt.plugins.load_commands(click.Group())  # which commands each plugin adds
    infos = list(rt.plugins.info.values())
    exporters = _exporters(rt)
    if as_json:
        rows = [{**info.__dict__, "observers": {n: d for n, (p, d) in exporters.items()
                                                if p == info.name}} for info in infos]  # fmt: skip
        click.echo(json.dumps(rows, indent=2))
    else:
        for info in infos:
            state = (click.style("ok", fg="green") if info.loaded
                     else click.style("FAILED", fg="red"))  # fmt: skip
            click.echo(
                f"{click.style(info.name, bold=True)}  [{state}]  {info.module}  ({info.source})"
            )
            for kind, names in info.registered.items():
                click.echo(f"    {kind}: {', '.join(names)}")
            for section in info.sections:
                click.echo(f"    settings: [plugins.{section}]")
            if info.commands:
                click.echo(f"    commands: {', '.join(info.commands)}")
            for name, (plugin, described) in exporters.items():
                if plugin == info.name and described:
                    click.echo(f"    {name}: {described}")
            if info.error:
                click.secho(f"    error: {info.error}", fg="red")
    if rt.plugins.settings_errors:
        sys.exit(Exit.CONFIG)


@cli.group(invoke_without_command=True)
@click.option("--subject", "-s", help="Only this subject's facts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def memory(ctx: click.Context, subject: str | None, as_json: bool) -> None:
    """Facts kept per subject across runs (list them; 'memory forget' deletes)."""
    if ctx.invoked_subcommand is not None:
        return
    items = ctx.obj.store().memories(subject, limit=10_000)
    if as_json:
        click.echo(json.dumps([m.model_dump() for m in items], indent=2))
        return
    if not items:
        click.echo("nothing remembered" + (f" about {subject}" if subject else ""))
        return
    for m in items:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(m.created))
        click.echo(f"{m.id}  {m.subject:<16} {m.channel:<6} {when}  {_short(m.fact, 70)}"
                   f"  (run {m.run_id} {m.persona})")  # fmt: skip


@memory.command("forget")
@click.argument("memory_id", required=False)
@click.option("--subject", "-s", help="Forget every fact about this subject.")
@pass_context
def memory_forget(obj: Context, memory_id: str | None, subject: str | None) -> None:
    """Delete one fact (by id) or all facts about a subject (the log keeps the events)."""
    if bool(memory_id) == bool(subject):
        raise click.UsageError("give a memory id or --subject (one of the two)")
    gone = obj.store().forget(memory_id=memory_id, subject=subject)
    click.echo(f"forgot {gone} fact{'s' if gone != 1 else ''}")


# -- the knowledge base ---------------------------------------------------------------


def _knowledge(obj: Context, embedder: str) -> Any:
    from ..knowledge import open_knowledge

    rt = Runtime(obj.settings, log_events=False)
    return open_knowledge(obj.settings, rt.registry.get("embedders", embedder).value)


_collection = click.option("--collection", "-c", default="default", show_default=True)
_embedder = click.option("--embedder", default="minilm", show_default=True,
                         help="A registered embedder (pilothouse plugins lists them).")  # fmt: skip


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@_collection
@_embedder
@click.option("--tag", "tags", multiple=True, help="Tag the chunks (search --tag filters).")
@click.option("--meta", "meta", multiple=True, metavar="KEY=VALUE",
              help="Metadata every chunk carries (search --where filters on it).")  # fmt: skip
@click.option("--reindex", is_flag=True,
              help="Rebuild the collection's vector index from its chunks.")  # fmt: skip
@click.option("--into", "into", metavar="NAME",
              help="Into a configured external store (Chroma, Qdrant...) instead, with the"
              " same chunking and provenance, embedded by that store's embedder.")  # fmt: skip
@pass_context
def ingest(obj: Context, paths: tuple[str, ...], collection: str, embedder: str,
           tags: tuple[str, ...], meta: tuple[str, ...], reindex: bool,
           into: str | None) -> None:  # fmt: skip
    """Index Markdown, text, HTML and PDF files (folders too) into the knowledge base.

    Unchanged files are skipped (content hash); changed ones are re-indexed;
    files gone from an ingested folder are removed. A collection of
    knowledge_index_from chunks or more then gets its approximate vector index
    brought up to date (only what changed goes in; --reindex rebuilds it).
    """
    metadata = _pairs(meta, "--meta")
    with click.progressbar(length=0, label="ingesting", file=sys.stderr) as bar:

        def step(source: str) -> None:
            bar.label = f"ingesting {Path(source).name[:40]}"
            bar.update(1)

        if into is not None:
            from ..knowledge.ingesting import ingest_into

            retriever = _store(obj, into)
            try:
                report = ingest_into(retriever, paths, tags=tags, metadata=metadata,
                                     progress=step)  # fmt: skip
            finally:
                retriever.store.close()
            where = retriever.store.where()
        else:
            kb = _knowledge(obj, embedder)
            report = kb.ingest(paths, collection=collection, tags=tags, metadata=metadata,
                               progress=step, reindex=reindex)  # fmt: skip
            kb.close()
            where = f"{kb.location} ({report.index})"
    for failure in report.failed:
        click.secho(f"skipped: {failure}", fg="yellow", err=True)
    click.secho(
        f"{report.files} files: {report.updated} indexed ({report.chunks} chunks),"
        f" {report.unchanged} unchanged, {report.removed} removed -> {where}",
        err=True,
    )


def _pairs(given: tuple[str, ...], option: str) -> dict[str, str]:
    """``KEY=VALUE`` options as a dict; a usage error for one without ``=``."""
    pairs = {}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"{option} {item!r}: write KEY=VALUE")
        pairs[key.strip()] = value
    return pairs


def _store(obj: Context, name: str) -> Any:
    """The retriever of the configured store ``name``; an error listing the stores."""
    rt = Runtime(obj.settings, log_events=False)
    if name not in rt.registry.stores:
        known = ", ".join(sorted(rt.registry.stores)) or "none configured"
        raise click.ClickException(
            f"no vector store named {name!r} (stores: {known}; e.g. [plugins.chroma.stores.NAME])"
        )
    return rt.registry.retrievers[name].value


@cli.command()
@click.argument("query")
@_collection
@_embedder
@click.option(
    "-k", type=click.IntRange(min=1), default=5, show_default=True, help="How many chunks."
)
@click.option("--source", help="Only chunks whose source path contains this.")
@click.option("--tag", help="Only chunks with this tag.")
@click.option("--where", "where", multiple=True, metavar="KEY=VALUE",
              help="Only chunks whose metadata KEY is VALUE (ingest --meta).")  # fmt: skip
@click.option("--exact", is_flag=True,
              help="Compare every vector instead of asking the approximate index.")  # fmt: skip
@click.option("--retriever", metavar="NAME",
              help="Ask a registered retriever instead (a configured store, a plugin's),"
              " as a persona would.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def search(obj: Context, query: str, collection: str, embedder: str, k: int,
           source: str | None, tag: str | None, where: tuple[str, ...], exact: bool,
           retriever: str | None, as_json: bool) -> None:  # fmt: skip
    """Search the knowledge base: ranked chunks with their source and score."""
    if not query.strip():
        raise click.UsageError("the query is empty")
    try:
        filters = Filters(source=source, tag=tag, metadata=_pairs(where, "--where"))
    except ValidationError as exc:
        raise click.UsageError(f"--where: {exc.errors()[0]['msg']}") from None
    if retriever is not None:
        found = _ask(obj, retriever, query, k, filters)
    else:
        from ..knowledge import knowledge_location

        location = knowledge_location(obj.settings)
        if isinstance(location, Path) and not location.exists():
            raise click.ClickException("no knowledge base yet: run 'pilothouse ingest PATH' first")
        kb = _knowledge(obj, embedder)
        found = kb.search(query, k=k, collection=collection, source=source, tag=tag,
                          metadata=filters.metadata, exact=exact)  # fmt: skip
        kb.close()
    if as_json:
        click.echo(json.dumps([p.model_dump() for p in found], indent=2))
        return
    for p in found:
        heading = f" > {p.metadata['heading']}" if p.metadata.get("heading") else ""
        click.secho(f"{p.score:.4f}  {p.source}{heading}", bold=True)
        click.echo(f"  {_short(p.text, 200)}")


def _ask(obj: Context, name: str, query: str, k: int, filters: Filters) -> list[Any]:
    """A registered retriever's answer, as a persona's step gets it."""
    import anyio

    rt = Runtime(obj.settings, log_events=False)
    found = rt.registry.get("retrievers", name).value

    async def go() -> list[Any]:
        try:
            return await search_within(found, query, k=k, filters=filters)
        finally:
            await found.aclose()

    return anyio.run(go)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def crews(obj: Context, as_json: bool) -> None:
    """List the crews that can be run, where each comes from and who is in it.

    Each crew is checked as a run would check it: its file, and every persona's
    model, tools, retrievers and guardrails. One that cannot run says why, and the
    command then exits 3 (a check for crew files in CI).
    """
    rt = Runtime(obj.settings, log_events=False)
    rows = []
    for name, origin in sorted(rt.crews().items()):
        row: dict[str, Any] = {"name": name, "origin": origin, "flow": None, "personas": [],
                               "description": "", "error": None}  # fmt: skip
        try:
            crew = rt.crew(name)
            row.update(flow=crew.flow.type, personas=crew.persona_names(),
                       description=crew.description)  # fmt: skip
            rt.engine.check(crew)
        except PilothouseError as exc:
            row["error"] = str(exc)
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            made_of = f"{row['flow']}: {', '.join(row['personas'])}" if row["flow"] else ""
            click.echo(click.style(f"{row['name']:<20}", bold=True) + f" {made_of}  "
                       + click.style(row["origin"], dim=True))  # fmt: skip
            if row["error"]:
                click.secho(f"    cannot run: {row['error']}", fg="red")
    if any(row["error"] for row in rows):
        sys.exit(Exit.CONFIG)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def config(obj: Context, as_json: bool) -> None:
    """Show the effective settings and where each came from (secrets masked), the
    plugins' sections included (exit 3 when a plugin's settings are wrong)."""
    rt = Runtime(obj.settings, log_events=False, strict=False)
    rows = obj.settings.describe()
    exporters = _exporters(rt)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    names = [row["name"] for row in rows] + [f"exporter {name}" for name in exporters]
    width = max(len(name) for name in names) + 2
    shown = max(30, *(len(row["value"]) for row in rows if len(row["value"]) <= 48))
    for row in rows:
        click.echo(f"{row['name']:<{width}}{row['value']:<{shown}}  "
                   + click.style(row["source"], dim=True))  # fmt: skip
    for name, (plugin, described) in exporters.items():
        click.echo(f"{'exporter ' + name:<{width}}{described}  " + click.style(plugin, dim=True))
    if not exporters:
        otel = obj.settings.sections().get("otel")
        off = otel is not None and otel.export == "off"
        click.echo(
            f"{'exporters':<{width}}none (export = off in [plugins.otel])"
            if off
            else f"{'exporters':<{width}}none (OTEL_EXPORTER_OTLP_ENDPOINT is not set)"
        )


def _exporters(rt: Runtime) -> dict[str, tuple[str, str]]:
    """The registered observers: name -> (plugin, what it does and where it sends)."""
    return {name: (e.plugin, e.value.describe()) for name, e in rt.registry.observers.items()}


@cli.command()
@click.option("--before", required=True, help="Runs that ended before: 90d, 12h or a date.")
@click.option("--dry-run", is_flag=True, help="Only say how much would go.")
@click.option(
    "--vacuum",
    is_flag=True,
    help="Then shrink the file (locks the store meanwhile; needs its size free on disk).",
)
@pass_context
def prune(obj: Context, before: str, dry_run: bool, vacuum: bool) -> None:
    """Delete the runs that ended before a time, with their events and escalations
    (unfinished runs are never pruned; facts kept about subjects stay). The file
    keeps its size and reuses the space; --vacuum gives it back to the disk."""
    cutoff = _since(before)
    assert cutoff is not None
    store = obj.store()
    try:
        runs, events = store.prune(cutoff, dry_run=dry_run)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(cutoff))
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{verb} {runs} run(s) and {events} event(s) that ended before {when}")
        if vacuum and not dry_run:
            before_size, after_size = store.vacuum()
            click.echo(f"the store went from {_mb(before_size)} to {_mb(after_size)}")
    finally:
        store.close()


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


@cli.group(name="store")
def store_group() -> None:
    """The run store itself: move a workspace between SQLite and PostgreSQL."""


@store_group.command(name="copy")
@click.option("--to", "target", required=True,
              help="Where to: a postgresql:// URL, or a SQLite file's path.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def store_copy(obj: Context, target: str, as_json: bool) -> None:
    """Copy every run, event, escalation, fact and audit record of this workspace's run
    store (store_url, or its SQLite file) into another store, then check that both
    hold as many rows and the same events for every run. Running it again copies
    what is new and changed. Exits 6 if the check finds a difference."""
    from ..store.copy import check_copyable, copy_store
    from ..store.open import is_url, open_location, store_location

    where: str | Path = target if is_url(target) else Path(target).resolve()
    here = store_location(obj.settings)
    if str(where) == str(here if is_url(here) else Path(here).resolve()):
        raise click.UsageError("--to names this workspace's own store")
    source = obj.store()
    try:
        destination = open_location(where)
        try:

            def progress(line: str) -> None:
                click.secho(line, err=True, dim=True)

            report = copy_store(check_copyable(source), check_copyable(destination), progress)
        finally:
            destination.close()
    finally:
        source.close()
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        counts = ", ".join(f"{n} {table}" for table, n in report.counts.items())
        click.echo(f"{report.target} holds {counts}")
    if not report.verified:
        problems = [*(f"{t}: counts differ" for t in report.uneven),
                    *(f"run {r}: events differ" for r in report.mismatched[:10])]  # fmt: skip
        click.secho("the copy does not match: " + "; ".join(problems), fg="red", err=True)
        sys.exit(Exit.STORE)
    if not as_json:
        click.echo("verified: every table's count and every run's events match")
