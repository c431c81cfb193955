"""Tools from MCP servers: real servers from the package index run as stdio children
(mcp-server-time), driven by crews whose scripted model makes the calls."""

from __future__ import annotations

import json
import sys

import pytest

import pilothouse
from pilothouse.testing import call, crew_of, reply, run_crew

pytestmark = pytest.mark.slow

TIME = {"command": sys.executable, "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}


def _settings(**servers):
    return {"mcp": {"servers": servers}}


async def test_a_crew_calls_a_third_party_mcp_server(ph_runtime, ph_model):
    ph_model.enqueue(call("time__get_current_time", timezone="Europe/Oslo"),
                     reply("It is morning in Oslo."))  # fmt: skip
    clerk = crew_of({"type": "sequential", "steps": ["clerk"]},
                    {"clerk": {"instructions": "Answer.", "tools": ["mcp:time/*"]}})  # fmt: skip
    async with ph_runtime(plugins=_settings(time=TIME)) as rt:
        result, events = await run_crew(rt, clerk, "What time is it in Oslo?")
        toolset = rt.registry.toolsets["mcp"].value
        listed = toolset.servers["time"].listed
    assert result.ok, result.error
    offered = {t["name"] for t in json.loads(_request_tools(ph_model.requests[0]))}
    assert {"time__get_current_time", "time__convert_time"} <= offered
    (done,) = [e for e in events if e.type == "tool_call"]
    assert done.tool == "time__get_current_time" and done.error is None
    assert json.loads(done.result)["timezone"] == "Europe/Oslo"
    assert listed == 1


def _request_tools(request) -> str:
    return json.dumps([t.model_dump() for t in request.tools])


async def test_one_session_and_one_tool_list_serve_many_runs(ph_runtime, ph_model):
    for _ in range(5):
        ph_model.enqueue(call("time__get_current_time", timezone="UTC"), reply("Noted."))
    clerk = crew_of({"type": "sequential", "steps": ["clerk"]},
                    {"clerk": {"instructions": "Answer.",
                               "tools": ["mcp:time/get_current_time"]}})  # fmt: skip
    async with ph_runtime(plugins=_settings(time=TIME)) as rt:
        for i in range(5):
            result, events = await run_crew(rt, clerk, f"time {i}")
            assert result.ok and [e.error for e in events if e.type == "tool_call"] == [None]
        server = rt.registry.toolsets["mcp"].value.servers["time"]
        assert server.listed == 1 and server.session is not None
    assert server.session is None and server.done.is_set()  # closed with the runtime


def test_an_unknown_server_or_tool_fails_before_the_run(ph_runtime):
    rt = ph_runtime(plugins=_settings(time=TIME))
    nowhere = crew_of({"type": "sequential", "steps": ["a"]},
                      {"a": {"instructions": "x", "tools": ["mcp:git/*"]}})  # fmt: skip
    with pytest.raises(pilothouse.NotFound, match=r"no MCP server named 'git'.*time"):
        rt.engine.check(nowhere)
    bare = crew_of({"type": "sequential", "steps": ["a"]},
                   {"a": {"instructions": "x", "tools": ["mcp:time"]}})  # fmt: skip
    with pytest.raises(pilothouse.ConfigError, match=r"mcp:time/\*"):
        rt.engine.check(bare)


def test_server_settings_are_checked(ph_workspace):
    (ph_workspace / "pilothouse.toml").write_text(
        '[plugins.mcp.servers.time]\ncommand = "x"\nurl = "http://127.0.0.1:9/mcp"\n'
    )
    with pytest.raises(pilothouse.ConfigError, match=r"\[plugins.mcp\] servers.time"):
        pilothouse.Runtime(pilothouse.load_settings(), log_events=False)
