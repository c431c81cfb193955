"""MCP tool calls through pilothouse against the SDK's own ``ClientSession.call_tool``,
in one run, on the same servers.

Servers (tests/mcp_server.py, the SDK's ``MCPServer``), each in a process of its own:
the inventory over stdio (a child of the client) and over streamable HTTP (uvicorn on
127.0.0.1). The measured call is ``lookup(item)``, read-only, a few bytes each way.

- raw: one ``ClientSession`` (initialised, tools listed once), ``call_tool`` in a loop:
  the floor of a tool call;
- tool: the pilothouse tool the ``mcp`` toolset makes of it, as the engine calls it
  (arguments parsed and checked against the server's schema, the call on the shared
  session with its timeout, the result turned into text), in a loop;
- in a run: the whole path in a crew run (model call from the scripted model, the
  call logged to SQLite, the result screened by no guardrail, quoted for the model):
  ``(time of a run with K calls - time of a run with none) / K``.

Then 100 runs of a one-call crew against the HTTP server, which counts what it is
asked: ``tools/list`` after the first must be 0 (peers list tools every turn).

Prints per-call microseconds, medians of ``--repeats`` rounds that run every variant
in turn, and ratios to raw. Target: tool <= 1.3x raw + 0.2 ms.
Usage: python bench/bench_mcp.py [--calls 500] [--repeats 5] [--runs 100]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
SERVER = str(ROOT / "tests" / "mcp_server.py")
ARGS = {"item": "helio"}


@contextlib.asynccontextmanager
async def raw_session(transport: str, url: str) -> Any:
    """The SDK's own client session on the inventory (stdio child or HTTP URL)."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamable_http_client

    async with contextlib.AsyncExitStack() as stack:
        if transport == "stdio":
            params = StdioServerParameters(command=sys.executable, args=[SERVER],
                                           env=dict(os.environ))  # fmt: skip
            devnull = stack.enter_context(open(os.devnull, "w"))  # noqa: SIM115
            read, write = await stack.enter_async_context(stdio_client(params, errlog=devnull))
        else:
            streams = await stack.enter_async_context(streamable_http_client(url))
            read, write = streams[0], streams[1]
        session = await stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        await session.list_tools()
        yield session


async def raw(transport: str, url: str, calls: int) -> float:
    """Seconds per raw ``call_tool``."""
    async with raw_session(transport, url) as session:
        await session.call_tool("lookup", ARGS)
        started = time.perf_counter()
        for _ in range(calls):
            await session.call_tool("lookup", ARGS)
        return (time.perf_counter() - started) / calls


def _server(transport: str, url: str) -> dict[str, Any]:
    if transport == "stdio":
        return {"command": sys.executable, "args": [SERVER]}
    return {"url": url}


async def tool(transport: str, url: str, calls: int) -> float:
    """Seconds per call of the pilothouse tool, as the engine makes it."""
    import pilothouse

    settings = pilothouse.load_settings(
        plugins={"mcp": {"servers": {"inv": _server(transport, url)}}}
    )
    async with pilothouse.Runtime(settings, log_events=False) as rt:
        toolset = rt.registry.toolsets["mcp"].value
        (lookup,) = await toolset.resolve("inv/lookup")
        raw_arguments = json.dumps(ARGS)
        await lookup.invoke(lookup.parse_arguments(raw_arguments))
        started = time.perf_counter()
        for _ in range(calls):
            await lookup.invoke(lookup.parse_arguments(raw_arguments))
        return (time.perf_counter() - started) / calls


async def in_run(transport: str, url: str, calls: int, folder: Path) -> float:
    """Seconds a call adds to a crew run (the engine, the log, the quoting)."""
    import pilothouse
    from pilothouse.testing import ScriptedPlugin, call, crew_of, reply

    per_run = min(calls, 20)
    model = ScriptedPlugin()
    settings = pilothouse.load_settings(
        workspace=str(folder / "ws"), default_model="scripted",
        plugins={"mcp": {"servers": {"inv": _server(transport, url)}}},
    )  # fmt: skip
    clerk = crew_of({"type": "sequential", "steps": ["clerk"]},
                    {"clerk": {"instructions": "Answer.", "tools": ["mcp:inv/lookup"]}},
                    limits={"max_identical_tool_calls": 10_000,
                            "max_tool_rounds": per_run + 2})  # fmt: skip
    rounds = max(calls // per_run, 3)
    async with pilothouse.Runtime(settings, plugins=[model]) as rt:

        async def runs(k: int) -> float:
            for _ in range(rounds):
                model.enqueue(*[call("inv__lookup", **ARGS) for _ in range(k)], reply("Done."))
            started = time.perf_counter()
            for i in range(rounds):
                result = await rt.run(clerk, f"stock {k} {i} {time.perf_counter()}")
                assert result.ok, result.error
            return (time.perf_counter() - started) / rounds

        await runs(1)  # warm: the session and its tool list
        with_calls, without = await runs(per_run), await runs(0)
    return max(with_calls - without, 0.0) / per_run


def lists_over_runs(runs: int) -> tuple[int, int, int]:
    """100 runs of a one-call crew on an HTTP server that counts what it is asked:
    (initialize, tools/list, tools/call)."""
    from mcp_server import Inventory, serve

    import pilothouse
    from pilothouse.testing import ScriptedPlugin, call, crew_of, reply

    state = Inventory()
    logging.getLogger().setLevel(logging.WARNING)  # the SDK's server logs every request
    with serve(state) as served, tempfile.TemporaryDirectory() as tmp:
        model = ScriptedPlugin()
        for _ in range(runs):
            model.enqueue(call("inv__lookup", **ARGS), reply("In stock."))
        settings = pilothouse.load_settings(
            workspace=str(Path(tmp) / "ws"), default_model="scripted",
            plugins={"mcp": {"servers": {"inv": {"url": served.url}}}},
        )  # fmt: skip
        clerk = crew_of({"type": "sequential", "steps": ["clerk"]},
                        {"clerk": {"instructions": "Answer.",
                                   "tools": ["mcp:inv/lookup"]}})  # fmt: skip

        async def go() -> None:
            async with pilothouse.Runtime(settings, plugins=[model]) as rt:
                for i in range(runs):
                    assert (await rt.run(clerk, f"stock {i}")).ok

        anyio.run(go)
        asked = served.methods
        return asked["initialize"], asked["tools/list"], asked["tools/call"]


def main() -> None:
    """Run every variant in turn, ``--repeats`` times; print medians and ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=100)
    options = parser.parse_args()

    http = subprocess.Popen([sys.executable, SERVER, "--http"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert http.stdout is not None
        url = http.stdout.readline().strip()
        print(f"MCP per call, {options.calls} calls x {options.repeats} rounds (medians);"
              f" server: tests/mcp_server.py lookup")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            for transport in ("stdio", "http"):
                found: dict[str, list[float]] = {"raw": [], "tool": [], "in a run": []}
                for r in range(options.repeats):
                    found["raw"].append(anyio.run(raw, transport, url, options.calls))
                    found["tool"].append(anyio.run(tool, transport, url, options.calls))
                    folder = Path(tmp) / f"{transport}{r}"
                    found["in a run"].append(
                        anyio.run(in_run, transport, url, options.calls, folder)
                    )
                base = statistics.median(found["raw"])
                for name, values in found.items():
                    median = statistics.median(values)
                    extra = (median - base) * 1e3
                    print(f"  {transport:<5} {name:<9} {median * 1e6:8.0f} us/call"
                          f"  {median / base:5.2f}x raw  ({extra:+.3f} ms)")  # fmt: skip
                tool_median = statistics.median(found["tool"])
                target = 1.3 * base + 0.0002
                verdict = "met" if tool_median <= target else "MISSED"
                print(f"  {transport:<5} target tool <= 1.3x raw + 0.2 ms"
                      f" = {target * 1e6:.0f} us: {verdict}")  # fmt: skip
    finally:
        assert http.stdin is not None
        http.stdin.close()
        http.wait(timeout=30)
    initialize, listed, called = lists_over_runs(options.runs)
    print(f"{options.runs} runs, one call each, counted at the HTTP server: initialize"
          f" {initialize}, tools/list {listed} (after the first: {listed - 1}),"
          f" tools/call {called}")  # fmt: skip


if __name__ == "__main__":
    main()
