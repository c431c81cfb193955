"""Crews served as A2A agents (``pilothouse a2a serve``): an agent card per crew, a
message runs the crew, each step is a status update, the output an artifact, an
escalation ``input-required`` (answered by the caller on the same task, or from the
inbox), ``tasks/cancel`` cancels the run."""

from __future__ import annotations

import contextlib
import math
import re
import socket
import sys
from dataclasses import dataclass
from typing import Any

import anyio
from a2a.helpers.proto_helpers import get_message_text, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, TaskState
from starlette.applications import Starlette
from starlette.routing import Mount

from pilothouse import DecisionError, PilothouseError, Redactor, Runtime, bearer_only

from .tasks import (
    CONTEXT,
    CREW,
    TASK,
    RunTaskStore,
    asking,
    followed,
    run_id_of,
    started_labels,
)

#: what a crew takes, as its skill says
INPUT = (
    "Input: the message's text is the run's input. Message metadata 'subject'"
    " (optional): what the run is about; facts about it are recalled and kept."
)
#: how a caller answers an escalation on the same task
ANSWER = re.compile(r"^\s*(approve|reject|edit)\b\s*:?\s*(.*)$", re.I | re.S)


@dataclass
class _Run:
    """A run started for a task, and where its events go."""

    run_id: str
    events: Any
    result: Any = None
    error: str | None = None
    #: how it ended, for a run another worker executes (read from the store)
    ended: Any = None


class CrewAgents:
    """The A2A side of a runtime: a Starlette app with an agent per crew."""

    def __init__(self, runtime: Runtime, task_group: Any, base_url: str,
                 crews: list[str] | None = None) -> None:  # fmt: skip
        self.rt = runtime
        self.task_group = task_group
        self.base_url = base_url.rstrip("/")
        self.redact = Redactor.from_settings(runtime.settings)
        self.runs: dict[str, _Run] = {}
        self._sinks: dict[str, Any] = {}
        runtime.subscribe(self._event)
        self.crews = sorted(n for n in runtime.crews() if not crews or n in crews)

    def _event(self, event: Any) -> None:
        sink = self._sinks.get(event.run_id)
        if sink is not None:
            sink.send_nowait(event)

    def card(self, crew_name: str) -> Any:
        """The crew's agent card: its description, a skill, where it answers."""
        crew = self.rt.crew(crew_name)
        url = f"{self.base_url}/crews/{crew_name}/"
        description = crew.description or f"The pilothouse crew {crew_name!r}."
        return AgentCard(
            name=crew_name, description=description, version="1.0",
            supported_interfaces=[AgentInterface(protocol_binding="JSONRPC", url=url,
                                                 protocol_version="1.0")],
            capabilities=AgentCapabilities(streaming=True), default_input_modes=["text/plain"],
            default_output_modes=["text/plain"],
            skills=[AgentSkill(id=crew_name, name=crew_name, tags=["pilothouse", "crew"],
                               description=f"{description}\n\n{INPUT}",
                               input_modes=["text/plain"], output_modes=["text/plain"])],
        )  # fmt: skip

    def app(self) -> Any:
        """A Starlette app: ``/crews/NAME/`` for each crew (its card and its JSON-RPC)."""
        mounts = []
        for name in self.crews:
            try:
                card = self.card(name)
            except PilothouseError as exc:
                print(f"pilothouse: crew {name!r} is not served over A2A: {exc}",
                      file=sys.stderr)  # fmt: skip
                continue
            handler = DefaultRequestHandler(
                agent_executor=_CrewExecutor(self, name),
                task_store=RunTaskStore(self.rt, name),
                agent_card=card,
            )
            routes = [*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/")]
            mounts.append(Mount(f"/crews/{name}", routes=routes))
        return Starlette(routes=mounts)

    def start(self, crew: str, text: str, task: Any, subject: str | None = None) -> _Run:
        """Start a run for a task, in the server's task group, labelled with the task (so
        any worker on the same store can answer for it)."""
        send, receive = anyio.create_memory_object_stream[Any](math.inf)
        run = _Run(run_id=run_id_of(task.id), events=receive)
        self.runs[task.id] = run
        self._sinks[run.run_id] = send
        labels = {TASK: task.id, CONTEXT: task.context_id, CREW: crew}

        async def go() -> None:
            try:
                run.result = await self.rt.run(crew, text, run_id=run.run_id, labels=labels,
                                               subject=subject)  # fmt: skip
            except PilothouseError as exc:
                run.error = str(exc)
            finally:
                # ended: a later call on its task follows it through the store (the
                # executor at work keeps its own reference)
                self.runs.pop(task.id, None)
                self._sinks.pop(run.run_id, None)
                send.close()

        self.task_group.start_soon(go)
        return run

    def elsewhere(self, task_id: str) -> _Run | None:
        """A task's run that another worker (or this one before a restart) started,
        followed through the run store; None when no run answers the task."""
        store = self.rt.store
        run_id = run_id_of(task_id)
        if store is None or started_labels(self.rt, run_id).get(TASK) != task_id:
            return None
        summary = store.get_run(run_id)
        run = _Run(run_id=run_id, events=followed(self.rt, run_id, summary.last_seq))
        run.ended = lambda: store.get_run(run_id)
        return run

    def decide(self, run: _Run, text: str, by: str) -> str | None:
        """Apply a caller's answer to the escalation the run waits on (read from the store:
        another worker may run it); what is wrong with the answer, if anything."""
        store = self.rt.store
        assert store is not None
        waiting = store.escalations(run_id=run.run_id)
        if not waiting:
            return None
        found = ANSWER.match(text)
        if found is None:
            return "answer approve, reject: WHY, or edit: THE TEXT"
        decision, rest = found.group(1).lower(), found.group(2).strip()
        with contextlib.suppress(DecisionError):  # decided meanwhile at the inbox: it stands
            store.decide(waiting[-1].id, decision, by=by, note="" if decision == "edit" else rest,
                         text=rest if decision == "edit" else None)  # fmt: skip
        return None


class _CrewExecutor(AgentExecutor):
    """Runs a crew for each new task; answers to its escalations on the same task."""

    def __init__(self, agents: CrewAgents, crew: str) -> None:
        self.agents = agents
        self.crew = crew

    async def execute(self, context: Any, event_queue: Any) -> None:
        """Start (or go on with) the run; report its steps; end, or wait for input."""
        text = get_message_text(context.message)
        task = context.current_task
        if task is None:
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
            run = self.agents.start(self.crew, text, task, subject=_subject(context.message))
        else:
            run = self.agents.runs.get(task.id) or self.agents.elsewhere(task.id)
        updater = TaskUpdater(event_queue, task.id, task.context_id)

        def said(words: str) -> Any:
            return updater.new_agent_message([new_text_part(self.agents.redact(words))])

        if run is None:
            await updater.failed(said(f"no run of crew {self.crew} answers task {task.id}"))
            return
        problem = self.agents.decide(run, text, by="a2a caller")
        if problem is not None:
            await updater.requires_input(said(problem))
            return
        await updater.start_work(said(f"run {run.run_id} of crew {self.crew}"))
        # a run followed through the store is let go when this call ends (its listener
        # closed); this worker's own stream stays open for the caller's next message
        closing = contextlib.aclosing(run.events) if run.ended is not None \
            else contextlib.nullcontext(run.events)  # fmt: skip
        async with closing as events:
            async for event in events:
                if event.type == "step_started":
                    await updater.update_status(TaskState.TASK_STATE_WORKING,
                                                said(f"{event.persona} at work"))  # fmt: skip
                elif event.type == "escalation_raised":
                    held = await self.agents.rt.escalation(event.escalation_id)
                    ask = asking(held, event.escalation_id)
                    await updater.requires_input(said(ask))
                    return
        result = run.ended() if run.ended is not None else run.result
        if result is not None and result.status == "succeeded":
            await updater.add_artifact([new_text_part(self.agents.redact(result.output or ""))],
                                       name="output")  # fmt: skip
            await updater.complete()
        elif result is not None and result.status == "cancelled":
            await updater.cancel(said(result.error or "cancelled"))
        else:
            why = run.error or (result.error if result is not None else "the run did not end")
            await updater.failed(said(f"run {run.run_id} failed: {why}"))

    async def cancel(self, context: Any, event_queue: Any) -> None:
        """Cancel the task's run (the run store's cancel request, as `pilothouse cancel`,
        wherever the run executes) and say the task is canceled."""
        if self.agents.rt.store is not None:
            with contextlib.suppress(PilothouseError):  # it ended meanwhile
                self.agents.rt.store.request_cancel(run_id_of(context.task_id or ""))
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.cancel(updater.new_agent_message([new_text_part("cancelled by the caller")]))


def _subject(message: Any) -> str | None:
    """The ``subject`` a message's metadata names, if any."""
    if not message.HasField("metadata"):
        return None
    subject = message.metadata.fields.get("subject")
    return subject.string_value or None if subject is not None else None


async def serve(runtime: Runtime, host: str, port: int, token: str | None,
                crews: list[str]) -> None:  # fmt: skip
    """Serve every crew at ``http://HOST:PORT/crews/NAME/`` until interrupted."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise PilothouseError(f"a2a serve: cannot listen on {host}:{port}: {exc}") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    async with runtime, anyio.create_task_group() as task_group:
        agents = CrewAgents(runtime, task_group, f"http://{shown}:{bound}", crews)
        app = agents.app()
        config = uvicorn.Config(bearer_only(app, token) if token else app, log_level="warning",
                                lifespan="on", access_log=False, ws="none",
                                timeout_graceful_shutdown=5)  # fmt: skip
        server = uvicorn.Server(config)
        stopped = anyio.Event()

        async def run_server() -> None:
            await server.serve(sockets=[sock])
            stopped.set()

        task_group.start_soon(run_server)
        while not server.started and not stopped.is_set():
            await anyio.sleep(0.01)
        if server.started:
            print(f"pilothouse: serving {len(agents.crews)} crews over A2A at"
                  f" http://{shown}:{bound}/crews/NAME/", file=sys.stderr, flush=True)  # fmt: skip
        await stopped.wait()
        task_group.cancel_scope.cancel()
