"""``pilothouse export``: send runs already in the log through an exporter plugin."""

from __future__ import annotations

from typing import Any

import anyio
import click

from ..runtime import Runtime
from .base import Context, cli, pass_context
from .viewing import _since


@cli.command("export")
@click.argument("exporter")
@click.argument("run_ids", nargs=-1)
@click.option("--since", help="Every run since: 7d, 12h, 30m or an ISO date (default: 7d).")
@pass_context
def export(obj: Context, exporter: str, run_ids: tuple[str, ...], since: str | None) -> None:
    """Send runs already in the log through EXPORTER (e.g. otlp): a backfill, or what an
    exporter that was down missed."""

    async def go() -> tuple[int, int]:
        async with Runtime(obj.settings) as rt:
            entry = rt.registry.observers.get(exporter)
            if entry is None:
                known = ", ".join(sorted(rt.registry.observers)) or "none is configured"
                raise click.UsageError(f"no exporter named {exporter!r} ({known})")
            store: Any = rt.store
            if run_ids:
                runs = [store.get_run(run_id).id for run_id in run_ids]
            else:
                after = _since(since or "7d") or 0.0
                runs = [r.id for r in store.list_runs(limit=100_000) if r.created >= after]
            sent = 0
            for run_id in runs:
                events = await anyio.to_thread.run_sync(store.events, run_id)
                count = entry.value.export(events)
                if count is None:
                    raise click.UsageError(f"{exporter!r} cannot send runs from the log")
                sent += count
            return len(runs), sent

    runs, sent = anyio.run(go)
    click.echo(f"{exporter}: {runs} run(s), {sent} span(s) sent")
