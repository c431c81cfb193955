"""Shared fixtures: a workspace in a temporary folder and a scripted model."""

from __future__ import annotations

import contextlib
import itertools
import json
from typing import Any

import pytest

import pilothouse
from pilothouse import ModelResponse, ToolCall, Usage, hookimpl
from pilothouse.testing import ScriptedPlugin as ScriptedProvider
from pilothouse.testing import reply

_ids = itertools.count(1)


def text_reply(text: str, tokens: tuple[int, int] = (10, 5)) -> ModelResponse:
    """A plain answer."""
    return reply(text, tokens)


def tool_reply(name: str, arguments: dict[str, Any] | str) -> ModelResponse:
    """A reply asking for one tool call."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    call = ToolCall(id=f"call_{next(_ids)}", name=name, arguments=raw)
    return ModelResponse(tool_calls=[call], usage=Usage(input_tokens=10, output_tokens=5))


class ScriptedPlugin:
    """A plugin object registering the scripted provider (the kit's, pilothouse.testing)
    plus whatever a test adds."""

    __name__ = "scripted"

    def __init__(self) -> None:
        self.provider = ScriptedProvider()
        self.tools: list[Any] = []
        self.guardrails: list[Any] = []
        self.retrievers: list[Any] = []

    @hookimpl
    def register_models(self, register: Any) -> None:
        register(self.provider)

    @hookimpl
    def register_tools(self, register: Any) -> None:
        for t in self.tools:
            register(t)

    @hookimpl
    def register_guardrails(self, register: Any) -> None:
        for g in self.guardrails:
            register(g)

    @hookimpl
    def register_retrievers(self, register: Any) -> None:
        for r in self.retrievers:
            register(r)


@pytest.fixture
def anyio_backend():
    """asyncio, the backend pilothouse's CLI uses."""
    return "asyncio"


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An empty project folder as the current directory, with no PILOTHOUSE_* leaking in."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("PILOTHOUSE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def openai_app():
    """One OpenAI-compatible server on 127.0.0.1 for the whole session: (app, base URL)."""
    from openai_server import FakeOpenAI, serve

    app = FakeOpenAI()
    with serve(app) as url:
        yield app, url


@pytest.fixture
def openai_server(openai_app, monkeypatch):
    """The server, reset, with OPENAI_BASE_URL / OPENAI_API_KEY pointing at it."""
    app, url = openai_app
    app.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-0123456789abcdef")
    return app


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL 16 with pgvector for the whole session, from the pgserver
    wheel (no system package, no server started by hand), on a Unix socket."""
    import os
    import shutil
    import tempfile
    import warnings

    # Neither folder is under pytest's base folder: a pytest started meanwhile (the
    # suite run twice at once, a test file run by hand) deletes all but the newest
    # three of those, and a server whose data folder is deleted under it crashes.
    runtime = tempfile.mkdtemp(prefix="pilothouse-xdg-")  # mode 0700: platformdirs
    os.environ.setdefault("XDG_RUNTIME_DIR", runtime)  # warns (an error here) otherwise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import pgserver

    folder = tempfile.mkdtemp(prefix="pilothouse-pg-")
    server = pgserver.get_server(folder, cleanup_mode="stop")
    yield server
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the session's server: its URL."""
    import uuid

    import psycopg

    admin = postgres_server.get_uri()
    name = f"t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    yield admin.replace("/postgres?", f"/{name}?")
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def scripted():
    """The scripted plugin; tests add tools, guardrails and replies to it."""
    return ScriptedPlugin()


@pytest.fixture
def make_runtime(workspace, scripted):
    """Build a Runtime on the temporary workspace with the scripted plugin registered."""

    def make(**settings: Any) -> pilothouse.Runtime:
        settings.setdefault("default_model", "scripted")
        return pilothouse.Runtime(pilothouse.load_settings(**settings), plugins=[scripted])

    return make


def finished_steps(path) -> int:
    """How many finished steps the run store at ``path`` holds: 0 before the file
    exists, or while another process is still making its tables."""
    import sqlite3

    if not path.exists():
        return 0
    db = sqlite3.connect(path, timeout=5)
    try:
        return db.execute("SELECT count(*) FROM events WHERE type = 'step_finished'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def wait_for_inbox(cwd, env, timeout: float = 60) -> list[dict[str, Any]]:
    """Poll ``pilothouse inbox --json`` as a person would until something waits."""
    import json
    import subprocess
    import sys
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        listed = subprocess.run(
            [sys.executable, "-m", "pilothouse", "inbox", "--json"],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if listed.returncode == 0 and json.loads(listed.stdout):
            return json.loads(listed.stdout)
    raise AssertionError("no escalation appeared in the inbox")


class FlagWord(pilothouse.Guardrail):
    """Flags outputs that say 'risky' and proposes them with 'careful' instead."""

    name = "flag_word"

    def check(self, text: str, context: Any) -> pilothouse.Verdict:
        if "risky" in text:
            return pilothouse.Verdict(action="flag", reason="says risky", risk=0.8,
                                      replacement=text.replace("risky", "careful"))  # fmt: skip
        return pilothouse.Verdict.ok()


def stop(process: Any) -> None:
    """Kill a subprocess if it still runs and close its pipes (a failing test must not
    leave them for the garbage collector to warn about in a later test)."""
    if process.poll() is None:
        process.kill()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
    process.wait(timeout=30)


def serve_and_get(args: list[str], cwd: Any, path: str = "/") -> tuple[str, str]:
    """Start ``pilothouse ARGS --port P`` on a free loopback port, GET ``path`` once it
    answers (30 s at most), stop it; return (page, its stderr)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "pilothouse", *args, "--port", str(port)],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    page = ""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not page:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    page = r.read().decode()
            except OSError:
                time.sleep(0.2)
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    return page, err


def crew(
    flow: dict[str, Any], personas: dict[str, dict[str, Any]], **extra: Any
) -> pilothouse.Crew:
    """A crew from plain data, as a crew file would give it."""
    return pilothouse.Crew.model_validate(
        {"name": extra.pop("name", "test"), "flow": flow, "personas": personas, **extra}
    )


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing (CI machines start bare)."""
    import os
    import shutil
    import subprocess

    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium")
                                         else None)  # fmt: skip
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0 or not shutil.which("chromium"):
        pytest.fail(f"chromium is needed for the portal tests and apt-get could not install it:"
                    f"\n{done.stderr[-2000:]}")  # fmt: skip
    return shutil.which("chromium")  # type: ignore[return-value]


@contextlib.contextmanager
def launched_chromium(chromium: str):
    """Headless Chromium driven by Playwright, closed on leaving. Playwright's sync API
    keeps an event loop running in the main thread while it lives, which no other
    test's event loop could start beside: keep it no longer than the tests need it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def browser(chromium):
    """Headless Chromium for one test module (see :func:`launched_chromium`)."""
    with launched_chromium(chromium) as launched:
        yield launched


#: a two-step crew the serving tests (MCP, A2A) offer to their clients
HELLO = """
description = "Says hello to the task."
[flow]
steps = ["greeter", "checker"]
[personas.greeter]
instructions = "Greet."
[personas.checker]
instructions = "Check the greeting."
"""


@contextlib.asynccontextmanager
async def escalated(rt, crew, text: str, *, timeout: float = 60):
    """Run ``crew`` on ``text`` in the background until it escalates: yields the waiting
    escalation and a list that holds the run's ``(result, events)`` once the block (where
    a person decides) has let the run end."""
    import anyio

    from pilothouse.testing import run_crew

    outcome: list = []

    async def go() -> None:
        outcome.append(await run_crew(rt, crew, text))

    async with anyio.create_task_group() as tg:
        tg.start_soon(go)
        with anyio.fail_after(timeout):
            while not rt.store.escalations():  # the run logs it, then waits
                await anyio.sleep(0.02)
        (waiting,) = rt.store.escalations()
        yield waiting, outcome


@pytest.fixture(scope="session")
def otlp_app():
    """A real OTLP/HTTP receiver on 127.0.0.1 for the session: (app, base URL)."""
    from otlp_receiver import OTLPReceiver

    from openai_server import serve

    app = OTLPReceiver()
    with serve(app) as url:  # serve() names the base URL with its /v1
        yield app, url.removesuffix("/v1")


@pytest.fixture
def receiver(otlp_app, monkeypatch):
    """The receiver, emptied, with OTEL_EXPORTER_OTLP_ENDPOINT pointing at it."""
    app, url = otlp_app
    app.reset()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "loan-desk")
    return app
