"""A2A tasks read from the run store: a run served over A2A is labelled with its task,
so any worker on the same store (SQLite or PostgreSQL) answers ``tasks/get`` and
``tasks/cancel`` for a run another worker started, or one from before a restart."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
from a2a.helpers.proto_helpers import new_text_message, new_text_part
from a2a.server.tasks import InMemoryTaskStore, TaskStore
from a2a.types import Artifact, ListTasksRequest, Role, Task, TaskState, TaskStatus
from google.protobuf.timestamp_pb2 import Timestamp

from pilothouse import PilothouseError, Redactor, Runtime, decision_view, plain_text

#: the labels a served run carries
TASK, CONTEXT, CREW = "a2a.task", "a2a.context", "a2a.crew"
#: how many of a crew's latest runs ``tasks/list`` looks through
LISTED_RUNS = 100
#: how often a run another worker executes is read again while a caller follows it
#: (on a store that sends no news), and the longest wait for news on one that does
FOLLOW_POLL_S, NEWS_WAIT_S = 0.2, 2.0

STATES = {
    "queued": TaskState.TASK_STATE_SUBMITTED,
    "running": TaskState.TASK_STATE_WORKING,
    "waiting_for_human": TaskState.TASK_STATE_INPUT_REQUIRED,
    "succeeded": TaskState.TASK_STATE_COMPLETED,
    "failed": TaskState.TASK_STATE_FAILED,
    "cancelled": TaskState.TASK_STATE_CANCELED,
}


def run_id_of(task_id: str) -> str:
    """The id of the run that answers a task (every worker derives the same one)."""
    return task_id.replace("-", "")[:12]


def asking(escalation: Any, escalation_id: str) -> str:
    """What a caller reads while a run waits on an escalation, and how to answer it."""
    ask = plain_text(decision_view(escalation))
    return (
        f"waiting for a person: escalation {escalation_id}\n{ask}\n"
        "Answer approve, reject: WHY or edit: THE TEXT on this task."
    )


#: the labels each run started with, as read (they never change once logged)
_LABELS: dict[tuple[str, str], dict[str, str]] = {}
#: how many runs' labels are kept
_LABELS_KEPT = 10_000


def started_labels(runtime: Runtime, run_id: str) -> dict[str, str]:
    """The labels a run started with; empty for a run that is not in the store (or not
    started yet). Read from its log once: ``tasks/list`` asks for a crew's latest runs
    at every call."""
    assert runtime.store is not None
    key = (runtime.store.location, run_id)
    if key in _LABELS:
        return _LABELS[key]
    with contextlib.suppress(PilothouseError):
        for event in runtime.store.events(run_id):
            if event.type == "run_started":
                if len(_LABELS) >= _LABELS_KEPT:
                    _LABELS.pop(next(iter(_LABELS)))
                _LABELS[key] = dict(event.labels)  # type: ignore[attr-defined]
                return _LABELS[key]
    return {}


async def followed(runtime: Runtime, run_id: str, after_seq: int) -> AsyncIterator[Any]:
    """The events of a run another worker executes, read from the store as they land,
    until it ends: at the store's news of committed events where it sends any
    (PostgreSQL's LISTEN), else every :data:`FOLLOW_POLL_S`."""
    store = runtime.store
    assert store is not None
    listener = store.listener()
    try:
        while True:
            for event in store.events(run_id, after_seq=after_seq):
                after_seq = event.seq
                yield event
            if store.get_run(run_id).finished:
                return
            if listener is None:
                await anyio.sleep(FOLLOW_POLL_S)
                continue
            try:
                await listener.wait(NEWS_WAIT_S)  # read again at news, or after a while
            except PilothouseError:  # the news channel is gone: read on a timer instead
                await listener.aclose()
                listener = None
    finally:
        if listener is not None:
            await listener.aclose()


class RunTaskStore(TaskStore):
    """The tasks of one served crew: this worker's own as the SDK saved them, any other
    as its run stands in the run store."""

    def __init__(self, runtime: Runtime, crew: str) -> None:
        self.rt = runtime
        self.crew = crew
        self.redact = Redactor.from_settings(runtime.settings)
        self.here = InMemoryTaskStore()

    async def save(self, task: Task, context: Any) -> None:
        """Keep the task; a task saved as canceled asks its run to stop, wherever it
        runs (how the SDK cancels a task held by another worker)."""
        await self.here.save(task, context)
        if task.status.state == TaskState.TASK_STATE_CANCELED and self.rt.store is not None:
            with contextlib.suppress(PilothouseError):  # it ended meanwhile
                self.rt.store.request_cancel(run_id_of(task.id))

    async def get(self, task_id: str, context: Any) -> Task | None:
        """This worker's task while it follows it; otherwise (or once it waits on a person
        who may have answered at the inbox) the task as its run stands in the store."""
        task = await self.here.get(task_id, context)
        if task is not None and task.status.state != TaskState.TASK_STATE_INPUT_REQUIRED:
            return task
        return self.from_run(task_id, task) or task

    async def list(self, params: Any, context: Any) -> Any:
        """The tasks of this crew's latest :data:`LISTED_RUNS` runs, wherever they ran,
        and those this worker holds (its own copy first), filtered and paged as asked."""
        listed = InMemoryTaskStore()
        token = ""
        while True:  # this worker's tasks, as the SDK saved them
            page = await self.here.list(ListTasksRequest(page_size=100, page_token=token),
                                        context)  # fmt: skip
            for task in page.tasks:
                await listed.save(task, context)
            token = page.next_page_token
            if not token:
                break
        store = self.rt.store
        for run in store.list_runs(crew=self.crew, limit=LISTED_RUNS) if store else []:
            task_id = started_labels(self.rt, run.id).get(TASK)
            if task_id and await listed.get(task_id, context) is None:
                task = self.from_run(task_id, None, run)
                if task is not None:
                    await listed.save(task, context)
        return await listed.list(params, context)

    async def delete(self, task_id: str, context: Any) -> None:
        """Forget the task here (its run stays in the store)."""
        await self.here.delete(task_id, context)

    def from_run(self, task_id: str, seen: Task | None, run: Any = None) -> Task | None:
        """The task a run labelled with ``task_id`` stands for (``run``: its summary, when
        the caller has read it); None when there is none."""
        store = self.rt.store
        run_id = run_id_of(task_id)
        labels = started_labels(self.rt, run_id) if store is not None else {}
        if store is None or labels.get(TASK) != task_id or labels.get(CREW) != self.crew:
            return None
        run = run if run is not None else store.get_run(run_id)
        if run.status == "waiting_for_human":
            waiting = store.escalations(run_id=run_id)
            said = asking(waiting[-1], waiting[-1].id) if waiting else "waiting for a person"
        elif run.status == "failed":
            said = f"run {run_id} failed: {run.error}"
        elif run.status == "cancelled":
            said = run.error or "cancelled"
        else:
            at = f": {run.current_persona} at work" if run.current_persona else ""
            said = f"run {run_id} of crew {run.crew}{at}"
        message = new_text_message(self.redact(said), context_id=labels.get(CONTEXT, ""),
                                   task_id=task_id, role=Role.ROLE_AGENT)  # fmt: skip
        when = Timestamp()
        when.FromNanoseconds(int(run.updated * 1e9))
        task = Task(id=task_id, context_id=labels.get(CONTEXT, ""),
                    status=TaskStatus(state=STATES.get(run.status, TaskState.TASK_STATE_WORKING),
                                      message=message, timestamp=when))  # fmt: skip
        if seen is not None:
            task.history.extend(seen.history)
            task.artifacts.extend(seen.artifacts)
        else:
            asked = self.redact(run.input)
            task.history.append(
                new_text_message(
                    asked, role=Role.ROLE_USER, context_id=task.context_id, task_id=task_id
                )
            )
        if run.status == "succeeded" and not task.artifacts:
            output = new_text_part(self.redact(run.output or ""))
            task.artifacts.append(
                Artifact(artifact_id=f"{run_id}-output", name="output", parts=[output])
            )
        return task
