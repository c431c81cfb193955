"""``pilothouse tui``: the monitor the person on the loop watches.

The app holds a :class:`~pilothouse.tui.feed.Feed` and polls it from a worker
thread a few times a second; what the poll read is applied on the UI thread
and only the widgets it touches are redrawn. Decisions and cancellations are
written from worker threads too: the UI never waits on the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static, TabbedContent, TabPane

from ..decision import decision_view
from ..errors import PilothouseError, StoreError
from .feed import Batch, Changes, Feed, RunFilter
from .render import escalation_detail, failure_detail
from .screens import ConfirmScreen, Decision, DecisionScreen, RunScreen
from .widgets import WINDOWS, FailureTable, InboxTable, RunTable, StatsBar


class MonitorApp(App[None]):
    """Fleet, exceptions and inbox, over one workspace's run store."""

    TITLE = "pilothouse"
    # absolute, so that subclasses defined elsewhere find it too
    CSS_PATH = Path(__file__).parent / "monitor.tcss"
    BINDINGS = [
        Binding("1", "tab('fleet')", "Fleet"),
        Binding("2", "tab('exceptions')", "Exceptions"),
        Binding("3", "tab('inbox')", "Inbox"),
        Binding("slash", "search", "Filter"),
        Binding("w", "window", "Window"),
        Binding("a", "decide('approve')", "Approve"),
        Binding("e", "decide('edit')", "Edit"),
        Binding("r", "decide('reject')", "Reject"),
        Binding("f", "unfold", "Whole text"),
        Binding("u", "undo", "Undo"),
        Binding("x", "cancel_selected", "Cancel run"),
        Binding("t", "toggle_theme", "Theme"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        feed: Feed,
        *,
        redact: Callable[[str], str] = str,
        decider: str = "tui",
        poll_interval: float = 0.25,
        window: str = "1h",
        undo_s: float = 5.0,
    ) -> None:
        super().__init__()
        #: how long a decision can be undone before it is recorded
        self.undo_s = undo_s
        #: a decision made and not recorded yet: (escalation id, decision, when it is due)
        self.pending: tuple[str, Decision, float] | None = None
        #: the escalation whose whole text the inbox shows (f), not folded
        self._unfolded: str | None = None
        self.feed = feed
        self.redact = redact
        self.decider = decider
        self.poll_interval = poll_interval
        self.window = window
        self.filter = RunFilter()
        self.clock = feed.clock
        self._fetching = False
        #: a poll came while a fetch was out (it may have missed what the poll was for)
        self._stale = False
        self.sub_title = (
            str(feed.location.parent) if isinstance(feed.location, Path) else feed.shown
        )

    # -- layout ----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        yield StatsBar(id="stats")
        with TabbedContent(initial="fleet", id="tabs"):
            with TabPane("Fleet", id="fleet"):
                yield Input(
                    placeholder="/ filter: words, status:failed, crew:support",
                    id="filter",
                    compact=True,
                )
                yield RunTable(id="runs")
            with TabPane("Exceptions", id="exceptions"), Vertical():
                yield FailureTable(id="failures")
                with VerticalScroll(classes="detail"):
                    yield Static("no failed runs", id="failure-body")
            with TabPane("Inbox", id="inbox"), Vertical():
                yield InboxTable(id="escalations")
                with VerticalScroll(classes="detail"):
                    yield Static("nothing waits for a decision", id="escalation-body")
        yield Footer()

    def on_mount(self) -> None:
        self.main.query_one(RunTable).focus()
        self._poll()
        self.set_interval(self.poll_interval, self._poll)
        self.set_interval(1.0, self._tick)
        self.run_worker(self._listen(), group="listen", exclusive=True)

    async def _listen(self) -> None:
        """Where the store announces its commits (PostgreSQL's NOTIFY), read the news as
        soon as they are committed rather than at the next poll."""
        while self.feed.store is None:  # the first fetch opens it
            await asyncio.sleep(0.1)
        listener = self.feed.store.listener()
        if listener is None:
            return
        try:
            while True:
                try:
                    heard = await listener.wait(30.0)
                except StoreError:  # the polls go on meanwhile and say what is wrong
                    await asyncio.sleep(5.0)
                    continue
                if heard:
                    self._poll()
        finally:
            await listener.aclose()

    @property
    def main(self) -> Screen:
        """The screen with the tabs (queries go there even while a run or dialog is open)."""
        return self.screen_stack[0]

    # -- following the store ------------------------------------------------------------

    def _poll(self) -> None:
        if not self.screen_stack:  # the timer fired while the app shuts down
            return
        screen = self.screen
        self.feed.watch = screen.run_summary.id if isinstance(screen, RunScreen) else None
        if not self._fetching:
            self._fetching = True
            self._fetch()
        else:  # news while a fetch is out: read again when it is back
            self._stale = True

    @work(thread=True, group="poll")
    def _fetch(self) -> None:
        batch = self.feed.fetch()
        try:
            self.call_from_thread(self._apply, batch)
        except RuntimeError:  # the app closed meanwhile: a store this fetch opened is closed
            if batch.store is not None:
                batch.store.close()

    def _apply(self, batch: Batch) -> None:
        self._fetching = False
        if self._stale:
            self._stale = False
            self.call_later(self._poll)
        changes = self.feed.apply(batch)
        if (changes or changes.problem) and self._views_up():
            # A fetch that ends while the app shuts down finds its widgets going one by
            # one (seen on a busy machine): there is nothing left to show them in.
            with contextlib.suppress(NoMatches):
                self.refresh_views(changes)

    def _views_up(self) -> bool:
        """Whether the tabs are mounted (timers and workers also fire while the app
        starts and while it shuts down, when they are not)."""
        return bool(self.screen_stack) and bool(self.main.query(RunTable))

    def refresh_views(self, changes: Changes | None = None) -> None:
        """Redraw what ``changes`` touched (everything when None)."""
        now = self.clock()
        self.main.query_one(StatsBar).show(
            self.feed.stats(WINDOWS[self.window]), self.window, self.feed.problem
        )
        self._show_fleet(now)
        self.main.query_one(FailureTable).show(self.feed.failures(), self.redact)
        if changes is None or changes.inbox_changed:
            self._show_inbox()
        if changes is not None and changes.raised:
            self._alert(len(changes.raised))
        screen = self.screen
        if isinstance(screen, RunScreen) and changes is not None:
            run_id = screen.run_summary.id
            screen.take([s.event for s in changes.events if s.event.run_id == run_id])
            screen.show_live(changes.live or {})
            if run_id in self.feed.runs:
                screen.show_run(self.feed.runs[run_id], now)
        if not self.main.query_one(RunTable).row_count and not self.feed.problem:
            self.main.query_one(StatsBar).show(
                self.feed.stats(WINDOWS[self.window]),
                self.window,
                None if self.feed.runs else "no runs yet: waiting for the first one",
            )

    def _show_fleet(self, now: float) -> None:
        self.main.query_one(RunTable).show(self.feed.visible(self.filter), now, self.redact)

    def _tick(self) -> None:
        if self.pending is not None and self.clock() >= self.pending[2]:
            self._record_pending()
        if not self._views_up():
            return
        now = self.clock()
        # as in _apply: a tick while the app shuts down finds its widgets going
        with contextlib.suppress(NoMatches):
            self.main.query_one(RunTable).tick(self.feed.visible(self.filter), now)
            screen = self.screen
            if isinstance(screen, RunScreen) and screen.run_summary.id in self.feed.runs:
                screen.show_run(self.feed.runs[screen.run_summary.id], now)

    def _alert(self, count: int) -> None:
        self.bell()
        what = "a new escalation" if count == 1 else f"{count} new escalations"
        self.notify(f"{what} waiting for you: press 3", title="inbox", severity="warning")
        self.main.query_one("#inbox", TabPane).set_class(True, "attention")

    def _show_inbox(self) -> None:
        items = self.feed.inbox()
        table = self.main.query_one(InboxTable)
        table.show(items, self.redact)
        tabs = self.main.query_one(TabbedContent)
        tabs.get_tab("inbox").label = f"Inbox ({len(items)})" if items else "Inbox"
        self._show_escalation()

    # -- selection -------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#escalations")
    def _show_escalation(self) -> None:
        key = self.main.query_one(InboxTable).selected_id()
        body = self.main.query_one("#escalation-body", Static)
        escalation = self.feed.waiting.get(key) if key else None
        if escalation is None:
            body.update("nothing waits for a decision")
        else:
            full = self._unfolded == escalation.id
            body.update(escalation_detail(escalation, self.redact, full=full))

    @on(DataTable.RowHighlighted, "#failures")
    def _show_failure(self) -> None:
        key = self.main.query_one(FailureTable).selected_id()
        if key:
            self._load_failure(key)

    @work(thread=True, exclusive=True, group="failure")
    def _load_failure(self, run_id: str) -> None:
        failure = self.feed.failure(run_id)
        body = failure_detail(failure, self.redact)
        self.call_from_thread(self.main.query_one("#failure-body", Static).update, body)

    @on(DataTable.RowSelected)
    def _open(self, message: DataTable.RowSelected) -> None:
        key = str(message.row_key.value)
        if message.data_table.id == "escalations":
            escalation = self.feed.waiting.get(key)
            key = escalation.run_id if escalation else ""
        if message.data_table.id in ("runs", "failures", "escalations") and key:
            self.open_run(key)

    def open_run(self, run_id: str) -> None:
        """Show one run's timeline (loaded in a worker, then followed live)."""
        run = self.feed.runs.get(run_id)
        if run is None:
            return
        self.push_screen(RunScreen(run, self.redact, self.feed.run_events))

    # -- actions ------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer (and show in the footer) the inbox keys in the inbox, cancel in the fleet."""
        if action == "undo":
            return self.pending is not None
        if action in ("decide", "cancel_selected", "unfold"):
            if not self.screen_stack or self.screen is not self.main:
                return False
            active = self.main.query_one(TabbedContent).active
            return active == ("fleet" if action == "cancel_selected" else "inbox")
        return True

    @on(TabbedContent.TabActivated)
    def _tab_changed(self) -> None:
        self.refresh_bindings()

    def action_tab(self, tab: str) -> None:
        """Switch to the fleet, exceptions or inbox tab."""
        if isinstance(self.screen, RunScreen):
            self.pop_screen()
        self.main.query_one(TabbedContent).active = tab
        if tab == "inbox":
            self.main.query_one("#inbox", TabPane).set_class(False, "attention")
        table = {"fleet": RunTable, "exceptions": FailureTable, "inbox": InboxTable}[tab]
        self.main.query_one(table).focus()

    def action_search(self) -> None:
        """Focus the fleet's filter."""
        self.action_tab("fleet")
        self.main.query_one("#filter", Input).focus()

    @on(Input.Changed, "#filter")
    def _filter(self, message: Input.Changed) -> None:
        self.filter = RunFilter.parse(message.value)
        self._show_fleet(self.clock())

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.main.query_one(RunTable).focus()

    def action_window(self) -> None:
        """Cycle the header's window: 15m, 1h, 24h, 7d."""
        names = list(WINDOWS)
        self.window = names[(names.index(self.window) + 1) % len(names)]
        self.refresh_views()

    def action_toggle_theme(self) -> None:
        """Switch between the dark and the light theme."""
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def action_decide(self, decision: str) -> None:
        """Approve the selected escalation, or open the dialog to edit or reject it."""
        if not self.check_action("decide", ()):
            return
        key = self.main.query_one(InboxTable).selected_id()
        escalation = self.feed.waiting.get(key) if key else None
        if escalation is None:
            self.notify("nothing selected in the inbox", severity="warning")
            return
        if decision == "approve":

            def confirmed(yes: bool | None) -> None:
                if yes:
                    self._hold(escalation.id, Decision("approve"))

            view = decision_view(escalation)
            self.push_screen(ConfirmScreen(view, self.redact), confirmed)
            return

        def chosen(result: Decision | None) -> None:
            if result is not None:
                self._hold(escalation.id, result)

        self.push_screen(DecisionScreen(escalation, decision, self.redact), chosen)

    def _hold(self, escalation_id: str, decision: Decision) -> None:
        """Keep a decision for ``undo_s`` before it is recorded (u undoes it); one made
        while another waits records that one first."""
        if self.pending is not None:
            self._record_pending()
        self.pending = (escalation_id, decision, self.clock() + self.undo_s)
        self.refresh_bindings()
        verb = {"approve": "approving", "edit": "approving your edit of", "reject": "rejecting"}
        self.notify(f"{verb[decision.decision]} {escalation_id} in {self.undo_s:g} s: u undoes it",
                    title="decision", timeout=max(self.undo_s, 2.0))  # fmt: skip

    def _record_pending(self) -> None:
        """Record the decision that waited out its undo window."""
        if self.pending is None:
            return
        escalation_id, decision, _ = self.pending
        self.pending = None
        self.refresh_bindings()
        self._decide(escalation_id, decision)

    def action_undo(self) -> None:
        """Take back the decision not recorded yet: the escalation still waits."""
        if self.pending is None:
            return
        escalation_id, decision, _ = self.pending
        self.pending = None
        self.refresh_bindings()
        self.notify(f"{decision.decision} of {escalation_id} undone: it still waits",
                    title="decision")  # fmt: skip

    def action_unfold(self) -> None:
        """Show the selected escalation's whole text (again: folded around its flags)."""
        key = self.main.query_one(InboxTable).selected_id()
        self._unfolded = None if self._unfolded == key else key
        self._show_escalation()

    @work(thread=True, group="decide")
    def _decide(self, escalation_id: str, decision: Decision) -> None:
        try:
            decided = self.feed.decide(
                escalation_id,
                decision.decision,
                by=self.decider,
                note=decision.note,
                text=decision.text,
            )
        except PilothouseError as exc:
            self.call_from_thread(self.notify, str(exc), title="not recorded", severity="error")
            return
        run = self.feed.runs.get(decided.run_id)
        then = "when a worker resumes it" if run is not None and run.stalled else "now"
        message = f"{decided.status} recorded for run {decided.run_id[:8]}: it continues {then}"
        self.call_from_thread(self.notify, message, title="decision")

    def action_cancel_selected(self) -> None:
        """Cancel the run under the cursor in the fleet."""
        if self.main.query_one(TabbedContent).active == "fleet":
            run_id = self.main.query_one(RunTable).selected_id()
            if run_id:
                self.cancel_run(run_id)

    def cancel_run(self, run_id: str) -> None:
        """Ask for ``run_id`` to be cancelled (the process running it stops it)."""
        self._cancel(run_id)

    @work(thread=True, group="decide")
    def _cancel(self, run_id: str) -> None:
        assert self.feed.store is not None
        try:
            summary = self.feed.store.request_cancel(run_id)
        except PilothouseError as exc:
            self.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.call_from_thread(self.notify, f"cancel requested for run {summary.id[:8]}")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The palette (ctrl+p) lists every action of the monitor."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Fleet", "Every run, newest first", lambda: self.action_tab("fleet"))
        yield SystemCommand(
            "Exceptions", "Failed runs with their errors", lambda: self.action_tab("exceptions")
        )
        yield SystemCommand(
            "Inbox", "Escalations waiting for a decision", lambda: self.action_tab("inbox")
        )
        yield SystemCommand("Filter runs", "Search the fleet", self.action_search)
        yield SystemCommand("Change window", "15m, 1h, 24h or 7d in the header", self.action_window)
        yield SystemCommand(
            "Approve", "Approve the selected escalation", lambda: self.action_decide("approve")
        )
        yield SystemCommand(
            "Edit and approve",
            "Edit the proposed text, then approve",
            lambda: self.action_decide("edit"),
        )
        yield SystemCommand(
            "Reject",
            "Reject the selected escalation with a note",
            lambda: self.action_decide("reject"),
        )
        yield SystemCommand("Cancel run", "Cancel the selected run", self.action_cancel_selected)
        yield SystemCommand("Toggle light/dark", "Switch theme", self.action_toggle_theme)

    def on_unmount(self) -> None:
        if self.pending is not None:  # quitting inside the undo window keeps the decision
            escalation_id, d, _ = self.pending
            self.pending = None
            with contextlib.suppress(PilothouseError):
                self.feed.decide(escalation_id, d.decision, by=self.decider, note=d.note,
                                 text=d.text)  # fmt: skip
        self.feed.close()
