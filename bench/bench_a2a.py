"""A remote A2A persona and `pilothouse a2a serve`, in one run.

1. Per call: the fraud desk of tests/a2a_agent.py (the SDK's own server classes, in a
   process of its own on 127.0.0.1) called N times in a row
   - raw: the SDK's own client, ``send_message`` and its stream read to the end (the
     floor of a call);
   - persona: the ``a2a`` provider's call as a step makes it (the message made from the
     step's input, the stream folded into the reply, the task id noted);
   - in a run: a one-step crew whose persona is the remote agent, logged to SQLite.
   Target (issue 37): persona <= 1.3x raw + 1 ms.
2. Serving: ``pilothouse a2a serve`` with a one-step crew on the offline model, 100
   callers at once through the SDK's client, each sending ``--per-caller`` messages;
   runs/s, against the same runs made in-process by ``Runtime.run`` at the same
   concurrency (the floor: the engine and its log, with no A2A in between), and
   against the bare SDK agent (the fraud desk, answering at once) at the same
   concurrency (the floor of the SDK's server and client: no run behind a task).

Usage: python bench/bench_a2a.py [--calls 200] [--callers 100] [--per-caller 3]
"""

from __future__ import annotations

import argparse
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
AGENT = str(ROOT / "tests" / "a2a_agent.py")
CREW = '[flow]\nsteps = ["answerer"]\n[personas.answerer]\ninstructions = "Answer."\n'


async def raw(url: str, calls: int) -> float:
    """Seconds per call with the SDK's own client."""
    from a2a.client import ClientConfig, create_client
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types import Role, SendMessageRequest

    client = await create_client(url, ClientConfig(streaming=True))
    async with client:

        async def once() -> None:
            message = new_text_message("score application 1", role=Role.ROLE_USER)
            async for _ in client.send_message(SendMessageRequest(message=message)):
                pass

        await once()
        started = time.perf_counter()
        for _ in range(calls):
            await once()
        return (time.perf_counter() - started) / calls


async def persona(url: str, calls: int) -> float:
    """Seconds per call of the provider, as a step calls it."""
    from pilothouse_a2a import A2ASettings
    from pilothouse_a2a.remote import RemoteAgents

    from pilothouse import Message, ModelRequest

    provider = RemoteAgents(A2ASettings.model_validate({"agents": {"fraud": {"url": url}}}))
    model = provider.model("fraud")
    request = ModelRequest(model="a2a:fraud", messages=[
        Message(role="system", content="x"), Message(role="user", content="score application 1")
    ])  # fmt: skip
    await model.complete(request)
    started = time.perf_counter()
    for _ in range(calls):
        await model.complete(request)
    elapsed = (time.perf_counter() - started) / calls
    await provider.aclose()
    return elapsed


async def in_run(url: str, calls: int, folder: Path) -> float:
    """Seconds per run of a one-step crew whose persona is the remote agent."""
    import pilothouse
    from pilothouse.testing import crew_of

    agents = {"a2a": {"agents": {"fraud": {"url": url}}}}
    settings = pilothouse.load_settings(workspace=str(folder / "ws"), plugins=agents)
    crew = crew_of({"type": "sequential", "steps": ["fraud"]}, {})
    async with pilothouse.Runtime(settings) as rt:
        await rt.run(crew, "score application 0")
        started = time.perf_counter()
        for i in range(calls):
            result = await rt.run(crew, f"score application {i + 1}")
            assert result.ok, result.error
        return (time.perf_counter() - started) / calls


async def callers(url: str, count: int, each: int) -> float:
    """Tasks/s of the agent at ``url`` with ``count`` SDK clients sending ``each``
    messages."""
    from a2a.client import ClientConfig, create_client
    from a2a.helpers.proto_helpers import new_text_message
    from a2a.types import Role, SendMessageRequest

    clients = [await create_client(url, ClientConfig(streaming=False))
               for _ in range(count)]  # fmt: skip

    async def one(client: Any, n: int) -> None:
        for i in range(each):
            message = new_text_message(f"question {n}-{i}", role=Role.ROLE_USER)
            async for _ in client.send_message(SendMessageRequest(message=message)):
                pass

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for n, client in enumerate(clients):
            group.start_soon(one, client, n)
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.close()
    return count * each / elapsed


async def in_process(folder: Path, count: int, each: int) -> float:
    """Runs/s of the same crew run by ``Runtime.run`` at the same concurrency."""
    import pilothouse

    settings = pilothouse.load_settings(workspace=str(folder / "floor"))
    async with pilothouse.Runtime(settings) as rt:
        crew = rt.crew(str(folder / "crews" / "quick.toml"))

        async def one(n: int) -> None:
            for i in range(each):
                await rt.run(crew, f"question {n}-{i}")

        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for n in range(count):
                group.start_soon(one, n)
        return count * each / (time.perf_counter() - started)


def main() -> None:
    """Both parts; medians of three rounds for the per-call part."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--callers", type=int, default=100)
    parser.add_argument("--per-caller", type=int, default=3)
    options = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    agent = subprocess.Popen([sys.executable, AGENT], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env=env)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        try:
            assert agent.stdout is not None
            url = agent.stdout.readline().strip() + "/"
            rows: dict[str, list[float]] = {"raw": [], "persona": [], "in a run": []}
            for r in range(3):
                rows["raw"].append(anyio.run(raw, url, options.calls))
                rows["persona"].append(anyio.run(persona, url, options.calls))
                rows["in a run"].append(anyio.run(in_run, url, options.calls, folder / str(r)))
            bare = anyio.run(callers, url, options.callers, options.per_caller)
        finally:
            assert agent.stdin is not None
            agent.stdin.close()
            agent.wait(timeout=30)
        base = statistics.median(rows["raw"])
        print(f"A2A per call, {options.calls} calls x 3 rounds (medians), the SDK-built agent"
              " in its own process")  # fmt: skip
        for name, values in rows.items():
            median = statistics.median(values)
            print(f"  {name:<9} {median * 1e3:8.2f} ms/call  {median / base:5.2f}x raw"
                  f"  ({(median - base) * 1e3:+.2f} ms)")  # fmt: skip
        target = 1.3 * base + 0.001
        verdict = "met" if statistics.median(rows["persona"]) <= target else "MISSED"
        print(f"  target persona <= 1.3x raw + 1 ms = {target * 1e3:.2f} ms: {verdict}")

        (folder / "crews").mkdir()
        (folder / "crews" / "quick.toml").write_text(CREW)
        server = subprocess.Popen([sys.executable, "-m", "pilothouse", "a2a", "serve", "--port",
                                   "0"], cwd=folder, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert server.stderr is not None
            line = server.stderr.readline()
            base_url = line.split(" at ", 1)[1].split("/crews/", 1)[0]
            served = anyio.run(callers, f"{base_url}/crews/quick/", options.callers,
                               options.per_caller)  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=30)
        floor = anyio.run(in_process, folder, options.callers, options.per_caller)
        print(f"a2a serve, {options.callers} callers x {options.per_caller} messages, offline"
              f" model: {served:.1f} runs/s; in-process Runtime.run at the same concurrency:"
              f" {floor:.1f} runs/s ({served / floor:.2f}x); the bare SDK agent at the same"
              f" concurrency: {bare:.1f} tasks/s ({served / bare:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
