"""A2A agents written with the a2a-sdk's own server classes (not pilothouse), served
by uvicorn on 127.0.0.1: the remote side of tests/test_a2a.py."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import uvicorn
from a2a.helpers.proto_helpers import get_message_text, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from starlette.applications import Starlette


class FraudDesk(AgentExecutor):
    """Scores a loan application: says it works, then answers with an artifact; a
    message containing 'explode' fails the task, one containing 'refuse' is rejected, one
    containing 'needs-income' asks for the income (input-required), then answers; one
    containing 'take-your-time' works until it is cancelled, one containing 'hold-on'
    until the test releases it; one containing 'as-json' answers JSON."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.headers: list[dict[str, str]] = []
        #: set when a slow task starts; the tasks the caller cancelled
        self.working = threading.Event()
        self.release = threading.Event()
        self.cancelled: list[str] = []

    async def execute(self, context, event_queue) -> None:
        text = get_message_text(context.message)
        self.received.append(text)
        self.headers.append(dict(context.call_context.state.get("headers", {})))
        asked = context.current_task is not None  # an answer to our question
        task = context.current_task or new_task_from_user_message(context.message)
        if not asked:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        if asked:
            await updater.add_artifact([new_text_part(f"Income noted: {text}.")], name="verdict")
            await updater.complete()
            return
        if text.startswith("echo: "):  # says what it is told to (what comes back is untrusted)
            await updater.add_artifact([new_text_part(text.removeprefix("echo: "))], name="said")
            await updater.complete()
            return
        if "take-your-time" in text:  # works until cancelled
            self.working.set()
            await anyio.sleep(120)
        if "hold-on" in text:  # works until the test releases it, saying so
            await updater.start_work(updater.new_agent_message([new_text_part("hold on")]))
            self.working.set()
            with anyio.move_on_after(60):
                while not self.release.is_set():
                    await anyio.sleep(0.02)
        if "needs-income" in text:
            await updater.requires_input(updater.new_agent_message(
                [new_text_part("What is the applicant's yearly income?")]))  # fmt: skip
            return
        await updater.start_work(updater.new_agent_message([new_text_part("checking records")]))
        if "explode" in text:
            await updater.failed(updater.new_agent_message([new_text_part("records offline")]))
            return
        if "refuse" in text:
            await updater.reject(updater.new_agent_message([new_text_part("out of scope")]))
            return
        if "as-json" in text:
            await updater.add_artifact([new_text_part('{"risk": "low"}')], name="verdict")
            await updater.complete()
            return
        await updater.add_artifact([new_text_part("Fraud risk: low. ")], name="verdict")
        await updater.add_artifact([new_text_part(f"{len(text.split())} words checked.")],
                                   name="detail")  # fmt: skip
        await updater.complete()

    async def cancel(self, context, event_queue) -> None:
        """Note the cancel and say the task is canceled."""
        self.cancelled.append(context.task_id)
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


class Served:
    """An executor's agent on a free port of 127.0.0.1."""

    def __init__(self, executor: AgentExecutor, name: str = "fraud-desk") -> None:
        self.executor = executor
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        card = AgentCard(
            name=name, description="Scores loan applications for fraud risk.", version="1.0",
            supported_interfaces=[AgentInterface(protocol_binding="JSONRPC", url=self.url + "/",
                                                 protocol_version="1.0")],
            capabilities=AgentCapabilities(streaming=True), default_input_modes=["text/plain"],
            default_output_modes=["text/plain"],
            skills=[AgentSkill(id="score", name="score", tags=["fraud"],
                               description="A fraud risk for an application")],
        )  # fmt: skip
        handler = DefaultRequestHandler(agent_executor=executor, task_store=InMemoryTaskStore(),
                                        agent_card=card)  # fmt: skip
        app = Starlette(routes=[*create_agent_card_routes(card),
                                *create_jsonrpc_routes(handler, "/")])  # fmt: skip
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="none"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        daemon=True)  # fmt: skip
        self._sock = sock

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the A2A test agent did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


@contextmanager
def serve(executor: AgentExecutor) -> Iterator[Served]:
    """Serve the executor until the block ends."""
    served = Served(executor)
    served.start()
    try:
        yield served
    finally:
        served.stop()


if __name__ == "__main__":  # the fraud desk in a process of its own: prints its URL
    import logging
    import sys

    logging.getLogger().setLevel(logging.ERROR)  # the SDK warns of every card it serves
    served = Served(FraudDesk())
    served.start()
    print(served.url, flush=True)
    sys.stdin.read()
    served.stop()
