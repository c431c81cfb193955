"""The long-lived entry point: settings, plugins, the run store and the engine together.

::

    async with pilothouse.Runtime() as rt:
        result = await rt.run("marketing", "Launch the solar backpack")

For a one-off run, :func:`pilothouse.run` does the same in one call.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from .crew import Crew
from .crewfile import load_crew_file
from .engine.escalation import DecisionWatcher
from .engine.runs import Engine
from .engine.runstate import RunResult, new_run_id
from .engine.watchdog import LoopWatchdog
from .errors import ConfigError, NotFound, PilothouseError, RunBusy, StoreUnavailable
from .events import FINAL_EVENTS, FINAL_STATUSES, RunQueued, log_entry
from .plugins import Plugins
from .registry import Registry
from .settings import Settings, load_settings
from .store.base import Escalation, RunStore
from .store.eventlog import EventLog, Observer
from .store.lease import new_owner
from .store.live import LiveText
from .store.open import open_store

log = logging.getLogger("pilothouse")


class Runtime:
    """Loads plugins, opens the run store and runs crews; use it as an async context manager.

    :param settings: effective settings (default: :func:`load_settings`)
    :param plugins: extra plugin objects to register (handy in tests and notebooks)
    :param log_events: False runs without a run store (events reach observers only)
    :param strict: a plugin whose settings are wrong stops the runtime here
        (:class:`ConfigError`, one line naming the source, section and field); False
        leaves that plugin out and goes on (``pilothouse plugins`` and ``config`` show
        what is wrong)
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        plugins: list[Any] = (),  # type: ignore[assignment]
        log_events: bool = True,
        strict: bool = True,
    ) -> None:
        self.settings = settings or load_settings()
        self.plugins = Plugins(self.settings)
        self.plugins.load(list(plugins))
        self.plugins.load_settings()
        if strict and self.plugins.settings_errors:
            raise ConfigError("; ".join(self.plugins.settings_errors))
        self.registry: Registry = self.plugins.collect()
        self.store: RunStore | None = None
        if log_events:
            self.store = open_store(self.settings, owner=new_owner())
        self.log = EventLog(self.store, outage_s=self.settings.store_outage_s)
        for name, observer in self.plugins.observers():
            self.log.subscribe(observer, name=name)
        for name, entry in self.registry.observers.items():
            entry.value.open(self.store)
            self.log.subscribe(entry.value, name=f"{entry.plugin}:{name}", types=entry.value.types)
        self.engine = Engine(self.registry, self.log, self.settings)
        self.engine.propagate = any(e.value.propagates for e in self.registry.observers.values())
        self.live = LiveText(self.store) if self.store is not None else None
        if self.live is not None:
            self.log.subscribe(self.live.delta, name="live-text", types=frozenset({"model_delta"}))
            self.log.tap(self.live.written, LiveText.SETTLED_BY)
        if self.store is not None:
            self.engine.decisions = DecisionWatcher(
                self.store,
                on_cancel=self.engine.cancel,
                active=self.engine.executing,
            )
        self._task_group: TaskGroup | None = None
        self._crew_files: dict[Path, tuple[tuple[int, int], Crew]] = {}

    async def __aenter__(self) -> Runtime:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        await self._task_group.start(self.log.run_flusher)
        if self.engine.decisions is not None:
            self._task_group.start_soon(self.engine.decisions.run)
        if self.store is not None:
            self._task_group.start_soon(self._heartbeat)
        if self.live is not None:
            self._task_group.start_soon(self.live.run)
        self._task_group.start_soon(LoopWatchdog().run)
        for entry in self.registry.toolsets.values():
            await entry.value.open(self._task_group)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        assert self._task_group is not None
        # toolsets close their connections in their own tasks, before those are cancelled
        with anyio.CancelScope(shield=True):
            for entry in self.registry.toolsets.values():
                try:
                    await entry.value.aclose()
                except Exception:  # closing must not hide the caller's own outcome
                    log.exception("plugin %r: aclose failed", entry.plugin)
        self._task_group.cancel_scope.cancel()
        # Hand the task group only a cancellation: any other error of the caller's
        # block propagates as itself, not wrapped in an exception group.
        cancelled = exc_info[0] is not None and issubclass(
            exc_info[0], anyio.get_cancelled_exc_class()
        )
        await self._task_group.__aexit__(*(exc_info if cancelled else (None, None, None)))
        self._task_group = None
        closing = [*self.registry.observers.values(), *self.registry.models.values(),
                   *self.registry.retrievers.values()]  # fmt: skip
        for entry in closing:
            try:
                await entry.value.aclose()
            except Exception:  # closing must not hide the caller's own outcome
                log.exception("plugin %r: aclose failed", entry.plugin)
        if self.store is not None:
            self.store.close()

    async def _heartbeat(self, interval: float = 5.0) -> None:
        store = self.store
        assert store is not None
        while True:
            await anyio.sleep(interval)
            # a store that does not answer is said by its health; the lease is renewed
            # at the next beat after it is back
            with contextlib.suppress(StoreUnavailable):
                await anyio.to_thread.run_sync(store.heartbeat)

    def subscribe(self, observer: Observer) -> None:
        """Call ``observer(event)`` for every event of every run of this runtime."""
        self.log.subscribe(observer)

    async def escalation(self, escalation_id: str, *, within: float = 30.0) -> Escalation:
        """An escalation by id once the store holds it: an observer told of an
        ``escalation_raised`` event hears of it just before the engine commits it, and a
        caller told of it must then find it at any process sharing the store.

        :raises NotFound: the store does not hold it after ``within`` seconds
        """
        if self.store is None:
            raise ConfigError("this runtime has no run store: it keeps no escalations")
        with anyio.move_on_after(within):
            while True:
                try:
                    return self.store.get_escalation(escalation_id)
                except NotFound:  # not committed yet: the engine flushes it next
                    await anyio.sleep(0.02)
        return self.store.get_escalation(escalation_id)

    def crew(self, name_or_path: str | Path) -> Crew:
        """A crew by file path, by crew-file name in ``crew_paths``, or by registered name.

        A crew file the user keeps wins over a plugin's crew of the same name (the
        user's copy is the one they mean to run; ``pilothouse crews`` says which is
        overridden).
        """
        path = Path(name_or_path)
        if path.suffix == ".toml" and path.is_file():
            return self._crew_file(path)
        name = str(name_or_path)
        file = self._crew_file_named(name)
        if file is not None:
            return self._crew_file(file)
        entry = self.registry.crews.get(name)
        if entry is not None:
            return entry.value
        if path.suffix == ".toml" or "/" in name or "\\" in name:  # meant as a file's path
            where = path if path.is_absolute() else Path.cwd() / path
            raise NotFound(f"no such file: {where} (a crew file: give its path, or a crew's name)")
        known = ", ".join(sorted(self.crews())) or "none"
        raise NotFound(f"no crew named {name!r} (available: {known})")

    def _crew_file(self, path: Path) -> Crew:
        """A crew file, read again only when it changed (a worker runs the same file
        thousands of times; one Crew object per version also keeps the engine's
        checks cached)."""
        stat = path.stat()
        version = (stat.st_mtime_ns, stat.st_size)
        key = path.resolve()
        cached = self._crew_files.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        crew = load_crew_file(path)
        self._crew_files[key] = (version, crew)
        return crew

    def crew_folders(self) -> list[Path]:
        """Folders searched for crew files."""
        return [*self.settings.crew_paths, self.settings.workspace / "crews"]

    def _crew_file_named(self, name: str) -> Path | None:
        """The first ``NAME.toml`` in the crew folders, if any."""
        for folder in self.crew_folders():
            candidate = folder / f"{name}.toml"
            if candidate.is_file():
                return candidate
        return None

    def crews(self) -> dict[str, str]:
        """Every available crew name and where it comes from (a file or a plugin; a file
        that overrides a plugin's crew says so)."""
        found: dict[str, str] = {}
        for folder in self.crew_folders():
            if folder.is_dir():
                for file in sorted(folder.glob("*.toml")):
                    found.setdefault(file.stem, str(file))
        for name, entry in self.registry.crews.items():
            if name in found:
                found[name] += f" (overrides plugin {entry.plugin})"
            else:
                found[name] = f"plugin {entry.plugin}"
        return found

    async def run(
        self,
        crew: str | Crew,
        input: str,
        *,
        model: str | None = None,
        run_id: str | None = None,
        subject: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> RunResult:
        """Run a crew on one input and return how it ended.

        :param model: ``provider:model`` or alias used by every persona of this run
        :param labels: where the run came from (``a2a.task``, say), logged with its start
            and shown by ``show`` and the portal
        """
        if self._task_group is None:
            raise RuntimeError("use the Runtime in 'async with Runtime() as rt:'")
        crew_obj = crew if isinstance(crew, Crew) else self.crew(crew)
        self.engine.check(crew_obj, model)  # a misnamed part fails before the run starts
        return await self.engine.run(
            crew_obj, input, run_id=run_id, model=model, subject=subject, labels=labels
        )

    async def resume(self, run_id: str, crew: Crew | None = None) -> RunResult:
        """Continue an interrupted run (running or waiting when its process died).

        :param crew: the crew, when it is not registered or in a crew file
        """
        if self._task_group is None or self.store is None:
            raise RuntimeError("resume needs 'async with Runtime() as rt:' with a run store")
        summary = self.store.get_run(run_id)
        if summary.status in FINAL_STATUSES:
            raise _ended(summary.id, summary.status)
        self.store.take_over(summary.id)
        events = self.store.events(summary.id)
        ended = next((e for e in events if e.type in FINAL_EVENTS), None)
        if ended is not None:  # ended (cancelled, say) between the look and the take-over
            raise _ended(summary.id, FINAL_EVENTS[ended.type])
        if self.store.cancel_requested([summary.id]):
            return await self.engine.cancel_logged(events, "cancelled by request while it was down")
        crew_obj = crew or self.crew(summary.crew)
        first: Any = events[0]
        self.engine.check(crew_obj, first.model_override)
        if not any(e.type == "run_started" for e in events):
            # taken from the queue by a process that died before the run started
            return await self.engine.run(
                crew_obj, first.input, run_id=first.run_id, model=first.model_override,
                subject=first.subject, after_seq=max(e.seq for e in events),
            )  # fmt: skip
        return await self.engine.resume(crew_obj, events)

    def queue(
        self, crew: str, input: str, *, model: str | None = None, subject: str | None = None
    ) -> str:
        """Queue a run of a registered or file crew for a worker; return its id."""
        if self.store is None:
            raise PilothouseError("queueing a run needs a run store")
        self.engine.check(self.crew(crew), model)
        event = RunQueued(run_id=new_run_id(), seq=1, ts=time.time(), crew=crew, input=input,
                          model_override=model, subject=subject)  # fmt: skip
        self.store.write([log_entry(event)])
        return event.run_id

    async def work(self, *, concurrency: int = 4, poll: float = 0.5, once: bool = False) -> int:
        """Be a worker: resume unfinished runs, then run queued ones as they come.

        Returns the number of runs that ended. ``once`` stops when nothing is left.
        """
        if self._task_group is None or self.store is None:
            raise RuntimeError("work needs 'async with Runtime() as rt:' with a run store")
        if concurrency < 1:
            raise ConfigError(f"a worker needs a concurrency of 1 or more, not {concurrency}")
        store = self.store
        done = 0
        limiter = anyio.CapacityLimiter(concurrency)
        active: set[str] = set()

        async def execute(run_id: str, resume: bool) -> None:
            nonlocal done
            async with limiter:
                try:
                    if resume:
                        result = await self.resume(run_id)
                    else:
                        queued = store.events(run_id)[0]
                        result = await self.engine.run(
                            self.crew(queued.crew),  # type: ignore[attr-defined]
                            queued.input,  # type: ignore[attr-defined]
                            run_id=run_id,
                            model=queued.model_override,  # type: ignore[attr-defined]
                            subject=queued.subject,  # type: ignore[attr-defined]
                            after_seq=1,
                        )
                    if result.status == "suspended":  # the store was away too long
                        log.warning("run %s %s", run_id, result.error)
                    else:
                        done += 1
                except RunBusy:
                    pass  # another worker took the stalled run over first: it is in hand
                except StoreUnavailable:
                    pass  # said by the store's health; the run is taken up again when it answers
                except PilothouseError as exc:
                    log.error("run %s: %s", run_id, exc)
                    # one that can never start as things are is failed, not left running;
                    # one busy elsewhere or hit by a store error is tried again later
                    if isinstance(exc, ConfigError | NotFound):
                        await self.engine.fail_logged(store.events(run_id), exc)
                        done += 1
                finally:
                    active.discard(run_id)

        async with anyio.create_task_group() as tg:
            while True:
                # Runs another worker left behind (it was killed, its machine lost):
                # whoever sees one first takes it over (the store's lease decides). Runs
                # whose own events this process has yet to commit are not stalled: read
                # before the store is asked, so that a commit in between cannot slip by.
                unwritten = self.log.unwritten_runs()
                try:
                    stalled = [r for r in await anyio.to_thread.run_sync(self.unfinished)
                               if r not in active and r not in unwritten]  # fmt: skip
                    for run_id in stalled[: max(0, concurrency - len(active))]:
                        active.add(run_id)
                        tg.start_soon(execute, run_id, True)
                    free = concurrency - len(active)
                    claimed = (await anyio.to_thread.run_sync(store.claim_queued, free)
                               if free else [])  # fmt: skip
                except StoreUnavailable:  # said by the store's health: ask again in a while
                    await anyio.sleep(poll)
                    continue
                for summary in claimed:
                    active.add(summary.id)
                    tg.start_soon(execute, summary.id, False)
                if once and not active and not claimed and not stalled:
                    return done
                await anyio.sleep(poll)

    def suspend(self, reason: str = "the process stopped") -> list[str]:
        """Stop every run this runtime executes without ending them (a worker shutting
        down): each logs ``run_suspended``, stays running or waiting, and is free for
        any worker to resume at once. Returns their ids."""
        return [run_id for run_id in self.engine.executing() if self.engine.suspend(run_id, reason)]

    def unfinished(self) -> list[str]:
        """Runs left running or waiting for a person by a process that is gone, oldest first."""
        return self.store.orphaned() if self.store is not None else []


def _ended(run_id: str, status: str) -> PilothouseError:
    """Why an ended run cannot be resumed, and what to do instead."""
    return PilothouseError(
        f"run {run_id} has ended ({status}): only an unfinished run can be resumed;"
        f" 'pilothouse replay {run_id}' re-runs it from its recording"
    )


async def run(
    crew: str | Crew, input: str, *, model: str | None = None, **settings: Any
) -> RunResult:
    """Run a crew once with a fresh :class:`Runtime`; ``settings`` override the loaded ones."""
    async with Runtime(load_settings(**settings)) as rt:
        return await rt.run(crew, input, model=model)
