"""A remote A2A agent as a model: a step's input goes out as a message, the task's
artifacts come back as the reply."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
from typing import TYPE_CHECKING, Any

import anyio

from pilothouse import (
    ConfigError,
    Model,
    ModelError,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    NotFound,
    Usage,
    ask_person,
    emit_delta,
    estimate_tokens,
    note_remote_task,
    resumed_remote_task,
)

if TYPE_CHECKING:
    from . import A2ASettings, AgentSettings

log = logging.getLogger("pilothouse.a2a")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: task states after which nothing more happens
FINAL = {"TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED",
         "TASK_STATE_REJECTED"}  # fmt: skip


class RemoteAgents(ModelProvider):
    """``a2a:NAME`` for each configured agent; one client per agent, made on first use."""

    name = "a2a"

    def __init__(self, settings: A2ASettings) -> None:
        self.settings = settings
        self._models: dict[str, RemoteAgent] = {}

    def model(self, name: str) -> Model:
        """The remote agent ``name``."""
        agent = self.settings.agents.get(name)
        if agent is None:
            known = ", ".join(sorted(self.settings.agents)) or "none"
            raise NotFound(f"no A2A agent named {name!r} ([plugins.a2a.agents]: {known})")
        if importlib.util.find_spec("a2a") is None:
            raise ModelError(f"the A2A agent {name!r} needs the A2A SDK: pip install"
                             " 'pilothouse[a2a]'")  # fmt: skip
        if name not in self._models:
            self._models[name] = RemoteAgent(name, agent)
        return self._models[name]

    async def aclose(self) -> None:
        """Close every agent's client."""
        for model in self._models.values():
            await model.aclose()


class RemoteAgent(Model):
    """One remote agent, called once per step."""

    provider = "a2a"

    def __init__(self, name: str, settings: AgentSettings) -> None:
        self.name = name
        self.settings = settings
        self._client: Any = None
        self._http: Any = None
        self._lock = anyio.Lock()

    async def _connect(self) -> Any:
        import httpx
        from a2a.client import ClientConfig, create_client

        async with self._lock:
            if self._client is None:
                headers = {k: _expand(v, self.name) for k, v in self.settings.headers.items()}
                self._http = httpx.AsyncClient(headers=headers, timeout=self.settings.timeout_s)
                try:
                    self._client = await create_client(
                        self.settings.url, ClientConfig(streaming=True, httpx_client=self._http)
                    )
                except Exception as exc:
                    await self._http.aclose()
                    self._http = None
                    raise ModelError(
                        f"A2A agent {self.name!r} at {self.settings.url}: cannot read its agent"
                        f" card: {_said(exc)}"
                    ) from None
            return self._client

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send the step's input as a message; the task's artifacts are the reply. A task
        that turns input-required asks a person (an escalation in the inbox) and sends
        the answer back to the same task; a person's refusal cancels it."""
        from a2a.helpers.proto_helpers import new_text_message
        from a2a.types import Role

        text = _the_input(request)
        client = await self._connect()
        outcome = _Outcome()
        message = new_text_message(text, role=Role.ROLE_USER)
        ref = resumed_remote_task()  # sent before this process stopped: not sent again
        while True:
            try:
                reattached = ref is not None and await self._reattach(client, ref, outcome)
                ref = None
                if not reattached:
                    await self._exchange(client, message, outcome)
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):  # the run was cancelled: so is the task
                    await self._cancel(client, outcome.task_id)
                raise
            if outcome.state != "TASK_STATE_INPUT_REQUIRED":
                return outcome.reply(self.name, text)
            answer = await ask_person(
                outcome.said or "(the agent asks for input and says nothing more)",
                reason=f"A2A agent {self.name!r} asks for input (task {outcome.task_id})",
            )
            if answer.decision == "reject":
                await self._cancel(client, outcome.task_id)
                raise ModelError(
                    f"A2A agent {self.name!r} asked for input and {answer.by or 'a person'}"
                    f" declined: {answer.note or 'no note'}", request_id=outcome.task_id,
                )  # fmt: skip
            said = answer.text if answer.decision == "edit" and answer.text else "approved"
            message = new_text_message(said, role=Role.ROLE_USER, task_id=outcome.task_id,
                                       context_id=outcome.context_id)  # fmt: skip
            outcome.state = ""

    async def _exchange(self, client: Any, message: Any, outcome: _Outcome) -> None:
        """One message and the stream of what it set off, within the timeout."""
        from a2a.types import SendMessageRequest

        try:
            with anyio.fail_after(self.settings.timeout_s):
                async for response in client.send_message(SendMessageRequest(message=message)):
                    outcome.take(response)
                    await outcome.note()
        except TimeoutError:
            await self._cancel(client, outcome.task_id)  # given up on: not left working
            raise ModelError(
                f"A2A agent {self.name!r} did not finish within {self.settings.timeout_s:g} s",
                request_id=outcome.task_id,
            ) from None
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"A2A agent {self.name!r} at {self.settings.url}: {_said(exc)}",
                             request_id=outcome.task_id) from None  # fmt: skip

    async def _reattach(self, client: Any, ref: str, outcome: _Outcome) -> bool:
        """Follow a task this call had started before the process stopped: its state
        now, then its stream until it ends. False when the agent no longer knows it
        (the message is then sent again: the work was lost on its side)."""
        from a2a.types import GetTaskRequest, SubscribeToTaskRequest

        try:
            with anyio.fail_after(self.settings.timeout_s):
                task = await client.get_task(GetTaskRequest(id=ref))
                outcome.take_task(task)
                outcome.noted = True
                if outcome.state in FINAL or outcome.state == "TASK_STATE_INPUT_REQUIRED":
                    return True
                async for response in client.subscribe(SubscribeToTaskRequest(id=ref)):
                    outcome.take(response)
        except TimeoutError:
            await self._cancel(client, ref)  # given up on: not left working
            raise ModelError(
                f"A2A agent {self.name!r} did not finish within {self.settings.timeout_s:g} s",
                request_id=ref,
            ) from None
        except Exception as exc:
            if "not found" in str(exc).lower():
                log.warning("A2A agent %r no longer knows task %s: sending again", self.name, ref)
                return False
            raise ModelError(f"A2A agent {self.name!r} at {self.settings.url}: {_said(exc)}",
                             request_id=ref) from None  # fmt: skip
        return True

    async def _cancel(self, client: Any, task_id: str | None) -> None:
        """Cancel the remote task (best effort: it may have ended meanwhile)."""
        from a2a.types import CancelTaskRequest

        if task_id:
            with anyio.move_on_after(10), contextlib.suppress(Exception):
                await client.cancel_task(CancelTaskRequest(id=task_id))

    async def aclose(self) -> None:
        """Close the client and its connections."""
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None


class _Outcome:
    """What a task's stream said: its id, state, artifacts and last status message."""

    def __init__(self) -> None:
        self.task_id: str | None = None
        self.context_id: str | None = None
        self.state = ""
        self.artifacts: dict[str, list[str]] = {}
        self.said = ""
        #: the task id is in the log (committed): a resumed run re-attaches to it
        self.noted = False

    async def note(self) -> None:
        """Hand the task's id to the engine once it is known."""
        if self.task_id and not self.noted:
            self.noted = True
            await note_remote_task(self.task_id)

    def take_task(self, task: Any) -> None:
        """A whole task as ``tasks/get`` gives it."""
        from a2a.helpers.proto_helpers import get_message_text
        from a2a.types import TaskState

        self.task_id, self.context_id = task.id, task.context_id
        self.state = TaskState.Name(task.status.state)
        if task.status.HasField("message"):
            self.said = get_message_text(task.status.message)
        for artifact in task.artifacts:
            self.artifacts[artifact.artifact_id] = [p.text for p in artifact.parts if p.text]

    def take(self, response: Any) -> None:
        from a2a.helpers.proto_helpers import get_message_text
        from a2a.types import TaskState

        kind = response.WhichOneof("payload")
        if kind == "message":  # an agent that answers at once, with no task
            self.state, self.said = "TASK_STATE_COMPLETED", get_message_text(response.message)
            self.artifacts.setdefault("message", []).append(self.said)
        elif kind == "task":
            self.take_task(response.task)
        elif kind == "status_update":
            update = response.status_update
            self.task_id, self.context_id = update.task_id, update.context_id
            self.state = TaskState.Name(update.status.state)
            if update.status.HasField("message"):
                self.said = get_message_text(update.status.message)
                if self.state not in FINAL and self.state != "TASK_STATE_INPUT_REQUIRED":
                    emit_delta(f"[{self.state.removeprefix('TASK_STATE_').lower()}]"
                               f" {self.said}\n")  # fmt: skip
        elif kind == "artifact_update":
            update = response.artifact_update
            self.task_id = update.task_id
            texts = [p.text for p in update.artifact.parts if p.text]
            kept = self.artifacts.setdefault(update.artifact.artifact_id, [])
            if not update.append:
                kept.clear()
            kept.extend(texts)
            emit_delta("".join(texts))

    def reply(self, name: str, sent: str) -> ModelResponse:
        if self.state != "TASK_STATE_COMPLETED":
            state = self.state.removeprefix("TASK_STATE_").lower() or "no answer"
            raise ModelError(
                f"A2A agent {name!r}: the task ended {state}"
                + (f": {self.said}" if self.said else ""),
                request_id=self.task_id,
            )
        text = "\n".join("".join(parts) for parts in self.artifacts.values()).strip()
        return ModelResponse(
            text=text, request_id=self.task_id, finish_reason="stop",
            usage=Usage(input_tokens=estimate_tokens(sent), output_tokens=estimate_tokens(text),
                        estimated=True),
        )  # fmt: skip


def _the_input(request: ModelRequest) -> str:
    """What the step asks: its last user message (the task, and what came before it)."""
    for message in reversed(request.messages):
        if message.role == "user" and message.content:
            return message.content
    raise ModelError("a remote agent was called with no input")


def _expand(value: str, agent: str) -> str:
    def one(match: re.Match[str]) -> str:
        found = os.environ.get(match.group(1))
        if found is None:
            raise ConfigError(f"A2A agent {agent!r} needs ${{{match.group(1)}}}, which is not set")
        return found

    return _VAR.sub(one, value)


def _said(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
