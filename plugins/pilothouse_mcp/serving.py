"""Crews served over MCP (``pilothouse mcp serve``): each crew a tool, the inbox and the
decisions as tools, run timelines as resources.

A crew's tool starts a run in the server's own task group and reports its steps as
progress notifications. When the run escalates, a client that supports elicitation
is asked (its user decides, as at the inbox); any other gets ``waiting for a person:
escalation ID`` at once, and the run waits on, decidable with the ``decide`` tool or
from the inbox. Everything a client reads passes the workspace's redactor.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import math
import re
import sys
import uuid
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from pilothouse import (
    DecisionError,
    PilothouseError,
    Redactor,
    Runtime,
    bearer_only,
    decision_view,
    plain_text,
)

log = logging.getLogger("pilothouse.mcp")

#: tools of the server itself: a crew of the same name is offered as crew_NAME
RESERVED = ("inbox", "decide")
RUNS_URI = "pilothouse://runs"


class Decision(BaseModel):
    """What a client's user answers to an escalation (an MCP elicitation form)."""

    decision: Literal["approve", "reject", "edit"] = Field(
        description="approve: go on as proposed; edit: go on with your text; reject: refuse"
    )
    text: str = Field(default="", description="for edit: the text (or a tool's arguments)")
    note: str = Field(default="", description="why (kept in the audit trail)")


class CrewServer:
    """An :class:`MCPServer` over a runtime's crews; runs start in ``task_group``."""

    def __init__(self, runtime: Runtime, task_group: Any, crews: list[str] | None = None) -> None:
        self.rt = runtime
        self.task_group = task_group
        self.redact = Redactor.from_settings(runtime.settings)
        #: run id -> where its events go while a tool call waits on it
        self.watching: dict[str, Any] = {}
        runtime.subscribe(self._event)
        self.server = MCPServer(
            "pilothouse",
            instructions="Each crew is a tool: give it the task as input. A run that needs"
            " a person's decision asks you when your client can be asked (elicitation), else"
            " answers 'waiting for a person' with the escalation's id: read it with inbox,"
            " decide it with decide. Run timelines: resources pilothouse://runs/RUN_ID.",
        )
        self.tools: dict[str, str] = {}
        for name in sorted(runtime.crews()):
            if crews and not any(fnmatch.fnmatchcase(name, g) for g in crews):
                continue
            tool = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]
            if tool in RESERVED or tool in self.tools:
                tool = f"crew_{tool}"[:64]
            try:
                self._add_crew(tool, name)
            except PilothouseError as exc:  # one broken crew file takes no other down
                log.warning("crew %r is not offered over MCP: %s", name, exc)
                continue
            self.tools[tool] = name
        self._add_desk()
        self._add_resources()

    def _event(self, event: Any) -> None:
        watcher = self.watching.get(event.run_id)
        if watcher is not None:
            watcher.send_nowait(event)

    # -- crews -------------------------------------------------------------------------

    def _add_crew(self, tool: str, crew_name: str) -> None:
        crew = self.rt.crew(crew_name)
        description = crew.description or f"Run the crew {crew_name!r} on a task."

        async def run(
            input: Annotated[
                str, Field(description="the task, as the crew's first persona reads it")
            ],
            ctx: Context,
            subject: Annotated[
                str | None, Field(description="who or what the run is about (its memory)")
            ] = None,
        ) -> CallToolResult:
            return await self.run_crew(crew_name, input, subject, ctx)

        self.server.add_tool(
            run, name=tool, description=f"{description} Answers with the run's output and id.",
            annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                        idempotent_hint=False, open_world_hint=True),
        )  # fmt: skip

    async def run_crew(
        self, crew: str, text: str, subject: str | None, ctx: Context
    ) -> CallToolResult:
        """Run the crew; report its steps; ask about its escalations; its outcome."""
        run_id = uuid.uuid4().hex[:12]
        send, receive = anyio.create_memory_object_stream[Any](math.inf)
        self.watching[run_id] = send
        outcome: dict[str, Any] = {}

        async def go() -> None:
            try:
                outcome["result"] = await self.rt.run(crew, text, run_id=run_id, subject=subject)
            except PilothouseError as exc:
                outcome["error"] = str(exc)
            finally:
                self.watching.pop(run_id, None)
                send.close()

        self.task_group.start_soon(go)
        done = 0
        async with receive:
            async for event in receive:
                if event.type == "step_started":
                    await ctx.report_progress(done, None, f"{event.persona} at work")
                elif event.type == "step_finished":
                    done += 1
                    await ctx.report_progress(done, None, f"{event.persona} finished")
                elif event.type == "escalation_raised" and not await self._ask(ctx, event):
                    self.watching.pop(run_id, None)  # the run waits on without this call
                    return _waiting(run_id, event)
        if "error" in outcome:
            return _result(run_id, "failed", None, outcome["error"])
        result = outcome["result"]
        return _result(run_id, result.status, result.output, result.error, self.redact)

    async def _ask(self, ctx: Context, event: Any) -> bool:
        """Ask the client's user about an escalation; whether they decided it."""
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.elicitation is None:
            return False
        held = await self.rt.escalation(event.escalation_id)  # committed, as callers see it
        message = self.redact(plain_text(decision_view(held)))
        try:
            answer = await ctx.elicit(message, schema=Decision)
        except Exception as exc:  # a client that fails to ask leaves it to the inbox
            log.warning("MCP client could not be asked about %s: %s", event.escalation_id, exc)
            return False
        if answer.action != "accept" or answer.data is None:
            return False
        chosen = answer.data
        # decided meanwhile elsewhere: that decision stands, the run goes on
        store = self.rt.store
        assert store is not None
        with contextlib.suppress(DecisionError):
            store.decide(
                event.escalation_id,
                chosen.decision,
                by=_client(ctx),
                note=chosen.note,
                text=chosen.text or None,
            )
        return True

    # -- the desk: inbox and decide ----------------------------------------------------

    def _add_desk(self) -> None:
        store = self.rt.store

        async def inbox() -> CallToolResult:
            waiting = store.escalations() if store is not None else []
            text = "\n\n".join(
                f"escalation {e.id} in run {e.run_id} ({e.crew}):\n"
                + self.redact(plain_text(decision_view(e)))
                for e in waiting
            )
            rows = [{"id": e.id, "run_id": e.run_id, "crew": e.crew, "kind": e.kind,
                     "reason": self.redact(e.reason), "risk": e.risk} for e in waiting]  # fmt: skip
            return CallToolResult(
                content=[TextContent(type="text", text=text or "nothing waits for a person")],
                structured_content={"waiting": rows},
            )

        async def decide(
            escalation_id: str,
            decision: Literal["approve", "reject", "edit"],
            ctx: Context,
            note: str = "",
            text: str | None = None,
        ) -> CallToolResult:
            if store is None:
                return _error("this server has no run store")
            try:
                decided = store.decide(escalation_id, decision, by=_client(ctx), note=note,
                                       text=text)  # fmt: skip
            except (DecisionError, PilothouseError) as exc:
                return _error(str(exc))
            said = f"{decision} recorded for escalation {escalation_id} (run {decided.run_id})"
            return CallToolResult(content=[TextContent(type="text", text=said)],
                                  structured_content={"run_id": decided.run_id,
                                                      "status": decided.status})  # fmt: skip

        self.server.add_tool(inbox, name="inbox", description="What waits for a person's"
                             " decision: each escalation with its reason, the flagged text"
                             " and what each choice does.",
                             annotations=ToolAnnotations(read_only_hint=True))  # fmt: skip
        self.server.add_tool(decide, name="decide", description="Decide an escalation as a"
                             " person at the inbox would: approve, reject or edit (with text).",
                             annotations=ToolAnnotations(read_only_hint=False,
                                                         destructive_hint=False,
                                                         idempotent_hint=False))  # fmt: skip

    # -- resources: runs and their timelines -------------------------------------------

    def _add_resources(self) -> None:
        store = self.rt.store

        @self.server.resource(RUNS_URI, name="runs", mime_type="application/json",
                              description="The latest runs, newest first.")  # fmt: skip
        def runs() -> str:
            listed = store.list_runs(limit=50) if store is not None else []
            return self.redact(json.dumps([r.model_dump(mode="json") for r in listed]))

        @self.server.resource(
            RUNS_URI + "/{run_id}",
            name="run",
            mime_type="application/json",
            description="One run: its summary and its timeline of events.",
        )
        def run(run_id: str) -> str:
            if store is None:
                raise PilothouseError("this server has no run store")
            summary = store.get_run(run_id)
            events = [e.model_dump(mode="json") for e in store.events(run_id)]
            return self.redact(json.dumps({"run": summary.model_dump(mode="json"),
                                           "events": events}))  # fmt: skip


def _client(ctx: Context) -> str:
    """Who decided, as the audit trail says: the MCP client's name."""
    params = getattr(ctx.session, "client_params", None)
    info = getattr(params, "client_info", None)
    return f"mcp:{getattr(info, 'name', None) or 'client'}"


def _waiting(run_id: str, event: Any) -> CallToolResult:
    said = (f"waiting for a person: escalation {event.escalation_id} ({event.reason})."
            f" Run {run_id} goes on once it is decided: the decide tool, 'pilothouse inbox',"
            " or the monitor.")  # fmt: skip
    return CallToolResult(
        content=[TextContent(type="text", text=said)],
        structured_content={"run_id": run_id, "status": "waiting_for_human",
                            "escalation_id": event.escalation_id},
    )  # fmt: skip


def _result(
    run_id: str, status: str, output: str | None, error: str | None, redact: Any = str
) -> CallToolResult:
    text = redact(output if output is not None else f"run {run_id} {status}: {error}")
    structured: dict[str, Any] = {"run_id": run_id, "status": status,
                                  "output": redact(output) if output is not None else None,
                                  "error": redact(error) if error else None}  # fmt: skip
    if structured["output"] and structured["output"][:1] in "{[":
        # a crew whose last persona has an output schema: its output as data too
        with contextlib.suppress(ValueError):
            structured["data"] = json.loads(structured["output"])
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=structured,
        is_error=status != "succeeded",
    )


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


async def serve_stdio(runtime: Runtime, crews: list[str]) -> None:
    """Serve over stdin and stdout until the client closes them (runs still at work are
    interrupted, to be resumed like any run whose process stopped)."""
    async with runtime, anyio.create_task_group() as task_group:
        crew_server = CrewServer(runtime, task_group, crews)
        await crew_server.server.run_stdio_async()
        task_group.cancel_scope.cancel()


async def serve_http(
    runtime: Runtime, host: str, port: int, token: str | None, crews: list[str]
) -> None:
    """Serve over streamable HTTP at ``http://HOST:PORT/mcp`` until interrupted; with a
    token, a request without ``Authorization: Bearer TOKEN`` is refused (401)."""
    import uvicorn

    async with runtime, anyio.create_task_group() as task_group:
        crew_server = CrewServer(runtime, task_group, crews)
        app = crew_server.server.streamable_http_app(host=host)
        config = uvicorn.Config(bearer_only(app, token) if token else app, host=host, port=port,
                                log_level="warning", lifespan="on", access_log=False,
                                ws="none", timeout_graceful_shutdown=5)  # fmt: skip
        server = uvicorn.Server(config)
        serving = anyio.Event()

        async def run_server() -> None:
            await server.serve()
            serving.set()  # it stopped (a signal) or never started (the port is taken)

        task_group.start_soon(run_server)
        while not server.started and not serving.is_set():
            await anyio.sleep(0.01)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1]
            shown = f"[{host}]" if ":" in host else host
            print(f"pilothouse: serving {len(crew_server.tools)} crews over MCP at"
                  f" http://{shown}:{bound}/mcp", file=sys.stderr, flush=True)  # fmt: skip
        await serving.wait()
        task_group.cancel_scope.cancel()
        if not server.started:
            raise PilothouseError(f"mcp serve: cannot listen on {host}:{port}")
