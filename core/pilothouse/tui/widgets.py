"""The monitor's tables and header: they draw what they are given, they read nothing."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable, Static

from ..events import FINAL_STATUSES
from ..store.base import Escalation, RunSummary
from .feed import STATUSES, FleetStats
from .render import Redact, clock, elapsed, plain, status_text

ACTIVE = ("running", "waiting_for_human", "queued")
WINDOWS = {"15m": 900.0, "1h": 3600.0, "24h": 86400.0, "7d": 604800.0}


class StatsBar(Static):
    """Runs/min, success, escalation and error rates, tokens and cost over a window."""

    def show(self, stats: FleetStats, window: str, problem: str | None = None) -> None:
        """Draw ``stats`` (or the reason there are none)."""
        if problem:
            self.update(Text(problem, style="bold yellow"))
            return

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value:.0%}"

        counts = Text()
        for status in STATUSES:
            n = stats.counts.get(status, 0)
            if n:
                counts.append_text(status_text(status))
                counts.append(f" {n}  ")
        line = Text.assemble(
            Text(f"last {window}: ", style="bold"),
            f"{stats.runs} runs ({stats.per_minute:.1f}/min)  ok {pct(stats.rate('succeeded'))}"
            f"  esc {pct(stats.escalation_rate)}  err {pct(stats.rate('failed'))}"
            f"  {stats.tokens:,} tok  ${stats.cost_usd:.4f}\n",
            counts if stats.runs else Text("no runs in this window (w: a wider one)", "dim"),
        )
        self.update(line)


class KeyedTable(DataTable):
    """A table whose rows are keyed by id (run or escalation) and whose cursor stays on
    its row when the rows are drawn again."""

    COLUMNS: tuple[str, ...] = ()

    def on_mount(self) -> None:
        self.cursor_type = "row"
        for name in self.COLUMNS:
            self.add_column(name, key=name)

    def rebuild(self, rows: Sequence[tuple[str, Sequence[object]]]) -> None:
        """Draw ``(key, cells)`` rows afresh, keeping the cursor on the row it was on."""
        selected = self.selected_id()
        self.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key)
        keys = [key for key, _ in rows]
        if selected in keys:
            self.move_cursor(row=keys.index(selected), scroll=False)

    def selected_id(self) -> str | None:
        """The key of the row under the cursor."""
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:  # the cursor sits outside the rows while the table is rebuilt
            return None
        return str(key.value)


class RunTable(KeyedTable):
    """The fleet: one row per run, newest first, updated in place."""

    #: fits 80 columns: ``now`` is the step and persona a running run is at
    COLUMNS = ("started", "run", "crew", "status", "now", "elapsed", "tokens", "cost")

    def on_mount(self) -> None:
        # Textual calls KeyedTable.on_mount (the columns) too: handlers run along the MRO
        self.zebra_stripes = True
        self._order: list[str] = []
        self._shown_elapsed: dict[str, str] = {}
        self._ticks = 0

    def show(self, runs: Sequence[RunSummary], now: float, redact: Redact) -> None:
        """Draw ``runs`` in order: cells in place when the rows are the same runs,
        a rebuild (keeping the cursor on its run) when they are not."""
        order = [r.id for r in runs]
        if order != self._order:
            self.rebuild([(run.id, self._cells(run, now, redact)) for run in runs])
            self._order = order
            return
        for run in runs:
            for name, value in zip(self.COLUMNS, self._cells(run, now, redact), strict=True):
                self.update_cell(run.id, name, value)

    def tick(self, runs: Sequence[RunSummary], now: float) -> None:
        """Advance the elapsed time of the runs still going, on the rows in view.

        Any changed cell makes the table draw all its rows again, so runs older
        than a minute (shown in minutes) are brought up to date every fifth tick
        only, and rows out of view not at all (they are current within a second
        of scrolling into view).
        """
        self._ticks += 1
        first = int(self.scroll_offset.y)
        for run in runs[max(0, first - 2) : first + self.size.height + 2]:
            if run.id not in self.rows or run.status not in ACTIVE:
                continue
            if now - run.created >= 60 and self._ticks % 5:
                continue
            shown = elapsed(run, now, coarse=True)
            if self._shown_elapsed.get(run.id) != shown:
                self._shown_elapsed[run.id] = shown
                self.update_cell(run.id, "elapsed", shown)

    @staticmethod
    def _cells(run: RunSummary, now: float, redact: Redact) -> tuple[object, ...]:
        at = "-"
        if run.current_persona and run.status not in FINAL_STATUSES:
            at = f"{run.current_step} {run.current_persona}"
        return (
            clock(run.created)[:5],
            run.id[:6],
            plain(run.crew, redact, 14),
            status_text(run.shown_status, check=run.check),
            plain(at, redact, 14),
            elapsed(run, now, coarse=True),
            f"{run.input_tokens + run.output_tokens:,}",
            f"${run.cost_usd:.4f}",
        )


class InboxTable(KeyedTable):
    """Escalations waiting for a person, the riskiest first."""

    COLUMNS = ("risk", "since", "crew", "persona", "kind", "reason")

    def show(self, items: Sequence[Escalation], redact: Redact) -> None:
        """Draw the inbox."""
        self.rebuild([(e.id, self._cells(e, redact)) for e in items])

    @staticmethod
    def _cells(e: Escalation, redact: Redact) -> tuple[object, ...]:
        risk = Text(f"{e.risk:.2f}", style="bold red" if e.risk >= 0.7 else "yellow")
        return (risk, clock(e.created), Text(e.crew), Text(e.persona), e.kind,
                plain(e.reason, redact, 60))  # fmt: skip


class FailureTable(KeyedTable):
    """Failed runs: when, which crew, what kind of failure, the message."""

    COLUMNS = ("when", "run", "crew", "kind", "message")

    def show(self, runs: Sequence[RunSummary], redact: Redact) -> None:
        """Draw the failed runs (nothing to do when they are the ones shown)."""
        if [r.id for r in runs] == [str(k.value) for k in self.rows]:
            return
        self.rebuild([(run.id, self._cells(run, redact)) for run in runs])

    @staticmethod
    def _cells(run: RunSummary, redact: Redact) -> tuple[object, ...]:
        kind = "limit hit" if run.error_kind == "limit" else (run.error_kind or "error")
        return (clock(run.updated), run.id[:8], Text(run.crew), Text(kind, style="red"),
                plain(run.error, redact, 70))  # fmt: skip
