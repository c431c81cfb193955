"""The run view and the decision dialog."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Static, TextArea

from ..decision import DecisionView
from ..events import BaseEvent
from ..store.base import Escalation, RunSummary
from .render import Redact, detail, elapsed, plain, progress, status_text, summary


class RunScreen(Screen):
    """One run's step timeline, live while it runs, and the selected event in full."""

    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("x", "cancel_run", "Cancel run"),
        Binding("end", "follow", "Follow"),
    ]

    def __init__(
        self, run: RunSummary, redact: Redact, load: Callable[[str], list[BaseEvent]]
    ) -> None:
        super().__init__()
        self.run_summary = run
        self.redact = redact
        self.load = load
        self.events: list[BaseEvent] = []
        self.following = True
        # Live events that arrive while the history loads wait here, so the
        # timeline is built in order.
        self._pending: list[BaseEvent] | None = []

    def compose(self) -> ComposeResult:
        yield Static(id="run-head")
        yield Static(id="live")
        with Horizontal():
            yield DataTable(id="timeline", cursor_type="row")
            with VerticalScroll(id="event-detail"):
                yield Static(id="event-body")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#timeline", DataTable)
        table.add_column("step", key="step")
        table.add_column("event", key="event")
        table.add_column("what", key="what")
        self.show_run(self.run_summary, self.app.clock())  # type: ignore[attr-defined]
        self.show_live({})
        table.focus()
        self._load_history()

    @work(thread=True)
    def _load_history(self) -> None:
        history = self.load(self.run_summary.id)
        self.app.call_from_thread(self._loaded, history)

    def _loaded(self, history: list[BaseEvent]) -> None:
        pending, self._pending = self._pending or [], None
        self.take(history + pending)

    def show_run(self, run: RunSummary, now: float) -> None:
        """Redraw the head line with the run's latest summary."""
        self.run_summary = run
        head = Text.assemble(
            Text(f"run {run.id}  ", "bold"),
            Text(run.crew, "bold"),
            "  ",
            status_text(run.shown_status),
            f"  {progress(run)}  {elapsed(run, now)}"
            f"  {run.input_tokens + run.output_tokens:,} tokens  ${run.cost_usd:.4f}\n",
            Text("input: ", "bold"),
            plain(run.input, self.redact, 150),
        )
        if run.output is not None:
            head.append_text(Text("\noutput: ", "bold"))
            head.append_text(plain(run.output, self.redact, 150))
        if run.error:
            head.append_text(Text(f"\nerror ({run.error_kind}): ", "bold red"))
            head.append_text(plain(run.error, self.redact, 150))
        self.query_one("#run-head", Static).update(head)

    def show_live(self, live: dict[str, str]) -> None:
        """Show the text the run's model calls are streaming right now."""
        widget = self.query_one("#live", Static)
        widget.display = bool(live)
        if live:
            step, text = sorted(live.items())[-1]
            tail = text[-400:]
            widget.update(Text.assemble(Text(f"step {step} streaming: ", "bold cyan"),
                                        plain(tail, self.redact)))  # fmt: skip

    def take(self, events: list[BaseEvent]) -> None:
        """Append events of this run (those already shown are skipped)."""
        if self._pending is not None:
            self._pending.extend(events)
            return
        table = self.query_one("#timeline", DataTable)
        shown = len(self.events)
        last = self.events[-1].seq if self.events else 0
        for event in events:
            if event.seq <= last:
                continue
            last = event.seq
            self.events.append(event)
            table.add_row(
                event.step_id or "", event.type, summary(event, self.redact), key=str(event.seq)
            )
        # Follow new events only: a poll that brought none must not pull the cursor
        # back down while the person moves it up (their key's highlight may not have
        # been handled yet).
        if self.following and len(self.events) > shown:
            table.move_cursor(row=table.row_count - 1)

    @on(DataTable.RowHighlighted, "#timeline")
    def _show_event(self, message: DataTable.RowHighlighted) -> None:
        index = message.cursor_row
        if 0 <= index < len(self.events):
            self.following = index == len(self.events) - 1
            self.query_one("#event-body", Static).update(detail(self.events[index], self.redact))

    def action_follow(self) -> None:
        """Jump to the newest event and stay there as events arrive."""
        self.following = True
        table = self.query_one("#timeline", DataTable)
        if table.row_count:
            table.move_cursor(row=table.row_count - 1)

    def action_cancel_run(self) -> None:
        """Ask for this run to be cancelled."""
        self.app.cancel_run(self.run_summary.id)  # type: ignore[attr-defined]


@dataclass
class Decision:
    """What the person decided in the dialog."""

    decision: str
    note: str = ""
    text: str | None = None


class DecisionScreen(ModalScreen[Decision | None]):
    """Edit the proposed text, or give the note a rejection needs."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel"), Binding("ctrl+s", "submit", "Submit")]

    def __init__(self, escalation: Escalation, decision: str, redact: Redact) -> None:
        super().__init__()
        self.escalation = escalation
        self.decision = decision
        self.redact = redact

    def compose(self) -> ComposeResult:
        e = self.escalation
        verb = {"edit": "Edit and approve", "reject": "Reject", "approve": "Approve"}
        with Vertical(id="decision"):
            yield Label(
                Text.assemble(Text(f"{verb[self.decision]}: ", "bold"), Text(self.redact(e.reason)))
            )
            if self.decision == "edit":
                yield TextArea(e.proposed or "", id="decision-text")
            yield Input(placeholder="note (why)", id="decision-note")
            with Horizontal(id="decision-buttons"):
                yield Button(verb[self.decision], variant="primary", id="decision-ok")
                yield Button("Cancel", id="decision-cancel")

    def on_mount(self) -> None:
        first = "#decision-text" if self.decision == "edit" else "#decision-note"
        self.query_one(first).focus()

    @on(Button.Pressed, "#decision-ok")
    @on(Input.Submitted, "#decision-note")
    def action_submit(self) -> None:
        """Close the dialog with the decision."""
        note = self.query_one("#decision-note", Input).value
        if self.decision == "reject" and not note.strip():
            self.notify("a rejection needs a note saying why", severity="warning")
            return
        text = None
        if self.decision == "edit":
            text = self.query_one("#decision-text", TextArea).text
        self.dismiss(Decision(self.decision, note, text))

    @on(Button.Pressed, "#decision-cancel")
    def action_dismiss_none(self) -> None:
        """Close without deciding."""
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """Approve? One confirmation, saying what approving will do (enter or y approves,
    escape or n goes back)."""

    BINDINGS = [
        Binding("y,enter", "answer(True)", "Approve"),
        Binding("n,escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, view: DecisionView, redact: Redact) -> None:
        super().__init__()
        self.view = view
        self.redact = redact

    def compose(self) -> ComposeResult:
        v = self.view
        does = next((c.does for c in v.choices if c.decision == "approve"), "")
        with Vertical(id="decision"):
            yield Label(
                Text.assemble(Text(f"Approve {v.id}? ", "bold"), plain(v.reason, self.redact))
            )
            yield Label(Text(does))
            with Horizontal(id="decision-buttons"):
                yield Button("Approve (y)", variant="primary", id="confirm-yes")
                yield Button("Cancel (n)", id="confirm-no")

    def on_mount(self) -> None:
        self.query_one("#confirm-yes").focus()

    @on(Button.Pressed, "#confirm-yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#confirm-no")
    def _no(self) -> None:
        self.dismiss(False)

    def action_answer(self, yes: bool) -> None:
        """Close the dialog with the answer."""
        self.dismiss(yes)
