"""``pilothouse mcp serve`` driven by the MCP SDK's own client, over stdio (the server a
child of the client, as Claude Desktop or Cursor start it) and over streamable HTTP:
crews as tools with progress, the run in ``pilothouse runs``, timelines as resources,
escalations asked through elicitation or left waiting for the inbox, a bearer token."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import anyio
import httpx2
import pytest
from command import ph

from conftest import HELLO
from pilothouse.cli import DEMO_INPUT

pytestmark = pytest.mark.slow

SHEET = """
description = "A stock sheet as data."
[flow]
steps = ["clerk"]
[personas.clerk]
instructions = "Fill the sheet."
[personas.clerk.output_schema]
type = "object"
required = ["summary", "count"]
properties = {summary = {type = "string"}, count = {type = "integer"}}
"""


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "hello.toml").write_text(HELLO)
    (tmp_path / "crews" / "sheet.toml").write_text(SHEET)
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    return {**env, **extra}


@contextlib.asynccontextmanager
async def stdio_session(folder, **callbacks):
    """The SDK's client on ``pilothouse mcp serve`` started as its child, in ``folder``."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=sys.executable, cwd=str(folder), env=_env(),
                                   args=["-m", "pilothouse", "mcp", "serve"])  # fmt: skip
    with open(folder / "serve.err", "w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write, **callbacks) as session,
        ):
            with anyio.fail_after(60):
                await session.initialize()
            yield session


async def test_a_crew_is_a_tool_with_progress_and_its_run_is_in_the_store(folder):
    progress: list[tuple[float, str | None]] = []

    async def heard(done, _total, message):
        progress.append((done, message))

    async with stdio_session(folder) as session:
        listed = {t.name: t for t in (await session.list_tools()).tools}
        assert {"hello", "marketing", "inbox", "decide"} <= set(listed)
        hello = listed["hello"]
        assert hello.description.startswith("Says hello to the task.")
        assert hello.input_schema["required"] == ["input"]
        with anyio.fail_after(60):
            result = await session.call_tool("hello", {"input": "Say hi to the team"},
                                             progress_callback=heard)  # fmt: skip
        assert not result.is_error
        run = result.structured_content
        assert run["status"] == "succeeded" and "Say hi to the team" in run["output"]
        assert result.content[0].text == run["output"]
        timeline = await session.read_resource(f"pilothouse://runs/{run['run_id']}")
        read = json.loads(timeline.contents[0].text)
        assert read["run"]["status"] == "succeeded"
        kinds = [e["type"] for e in read["events"]]
        assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
        runs = json.loads((await session.read_resource("pilothouse://runs")).contents[0].text)
        assert [r["id"] for r in runs] == [run["run_id"]]
        sheet = (await session.call_tool("sheet", {"input": "helio stock"})).structured_content
        assert sheet["status"] == "succeeded" and json.loads(sheet["output"]) == sheet["data"]
        assert set(sheet["data"]) == {"summary", "count"}  # the crew's structured output
    assert progress == [(0, "greeter at work"), (1, "greeter finished"),
                        (1, "checker at work"), (2, "checker finished")]  # fmt: skip
    listed = json.loads(ph("runs", "--json", cwd=folder, env=_env()).stdout)
    assert [(r["id"], r["crew"], r["status"]) for r in listed] == [
        (sheet["run_id"], "sheet", "succeeded"),
        (run["run_id"], "hello", "succeeded"),
    ]
    assert (folder / "serve.err").read_text() == ""  # nothing said on its way out


async def test_an_escalation_is_asked_through_elicitation(folder):
    """The marketing crew escalates a risky claim: the client's user is asked (the
    decision view as text, a form of approve / reject / edit) and approves."""
    from mcp.types import ElicitResult

    asked: list[str] = []

    async def elicit(_context, params):
        asked.append(params.message)
        return ElicitResult(action="accept", content={"decision": "approve", "note": "fine"})

    async with stdio_session(folder, elicitation_callback=elicit) as session:
        with anyio.fail_after(120):
            result = await session.call_tool("marketing", {"input": DEMO_INPUT})
    run = result.structured_content
    assert run["status"] == "succeeded", run
    assert asked and "approve:" in asked[0] and "reject:" in asked[0]
    decided = json.loads(ph("show", run["run_id"], "--json", cwd=folder, env=_env()).stdout)
    verdicts = [e for e in decided["events"] if e["type"] == "escalation_decided"]
    assert verdicts and {v["by"] for v in verdicts} == {"mcp:mcp"}
    assert {v["decision"] for v in verdicts} == {"approve"}


async def test_without_elicitation_the_run_waits_for_the_inbox_and_decide_settles_it(folder):
    async with stdio_session(folder) as session:
        with anyio.fail_after(120):
            result = await session.call_tool("marketing", {"input": DEMO_INPUT})
        waiting = result.structured_content
        assert waiting["status"] == "waiting_for_human" and not result.is_error
        escalation = waiting["escalation_id"]
        assert result.content[0].text.startswith(f"waiting for a person: escalation {escalation}")
        inbox = await session.call_tool("inbox", {})
        assert [w["id"] for w in inbox.structured_content["waiting"]] == [escalation]
        assert escalation in inbox.content[0].text and "approve:" in inbox.content[0].text
        approve = {"escalation_id": escalation, "decision": "approve", "note": "ok"}
        decided = await session.call_tool("decide", approve)
        assert not decided.is_error, decided.content[0].text
        again = await session.call_tool("decide", {"escalation_id": escalation,
                                                   "decision": "reject"})  # fmt: skip
        assert again.is_error and "already" in again.content[0].text
        with anyio.fail_after(120):  # the run goes on in the server; its end is in the store
            while True:
                read = await session.read_resource(f"pilothouse://runs/{waiting['run_id']}")
                status = json.loads(read.contents[0].text)["run"]["status"]
                if status not in ("running", "waiting_for_human"):
                    break
                if status == "waiting_for_human":  # a later step may escalate again
                    for w in (await session.call_tool("inbox", {})).structured_content["waiting"]:
                        await session.call_tool("decide", {"escalation_id": w["id"],
                                                           "decision": "approve"})  # fmt: skip
                await anyio.sleep(0.1)
    assert status == "succeeded"


@pytest.fixture
def http_server(folder):
    """``pilothouse mcp serve --http 127.0.0.1:0`` with a token: (URL, token)."""
    token = "s3cret-token-for-tests"
    server = subprocess.Popen(
        [sys.executable, "-m", "pilothouse", "mcp", "serve", "--http", "127.0.0.1:0"],
        cwd=folder, env=_env(PILOTHOUSE_PLUGINS__MCP__SERVE__TOKEN=token),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = server.stderr.readline()
        assert "serving" in line and "over MCP at http://127.0.0.1:" in line, line
        yield line.split(" at ", 1)[1].strip(), token
    finally:
        server.terminate()
        server.wait(timeout=30)
        rest = server.stderr.read()
        server.stderr.close()
        assert token not in rest and token not in line


async def test_http_serving_needs_the_token_and_runs_a_crew(http_server, folder):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    url, token = http_server
    refused = httpx2.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=30)
    assert refused.status_code == 401
    wrong = httpx2.post(url, json={}, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401
    rebound = httpx2.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=30,
                          headers={"Authorization": f"Bearer {token}",
                                   "Host": "evil.example:80"})  # fmt: skip
    assert rebound.status_code in (400, 403, 421)  # a name someone else controls
    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    async with (
        client,
        streamable_http_client(url, http_client=client) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        with anyio.fail_after(60):
            await session.initialize()
            result = await session.call_tool("hello", {"input": "Hi over HTTP"})
    assert result.structured_content["status"] == "succeeded"
    listed = json.loads(ph("runs", "--json", cwd=folder, env=_env()).stdout)
    assert [r["id"] for r in listed] == [result.structured_content["run_id"]]


def test_serving_off_loopback_needs_a_token(folder):
    done = ph("mcp", "serve", "--http", "0.0.0.0:0", cwd=folder, env=_env())
    assert done.returncode == 3 and "set [plugins.mcp.serve] token" in done.stderr
    bad = ph("mcp", "serve", "--http", "nowhere", cwd=folder, env=_env())
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr


async def test_a_broken_crew_file_is_left_out_and_said_so(folder):
    (folder / "crews" / "bad.toml").write_text("[flow]\nsteps = [\n")
    async with stdio_session(folder) as session:
        names = {t.name for t in (await session.list_tools()).tools}
    assert "hello" in names and "bad" not in names
    said = (folder / "serve.err").read_text()
    assert "crew 'bad' is not offered over MCP" in said and "bad.toml" in said
