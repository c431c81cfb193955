"""The fleet rides out its database: a PostgreSQL that crashes and comes back, that stays
away past the bound, or that goes silent behind a partition; and a SQLite file that is
locked or full. Real servers (the pgserver wheel) on loopback; every wait is for an
event, bounded by a deadline that only a hang reaches."""

from __future__ import annotations

import time

import anyio
import psycopg
import pytest
from conftest import crew, text_reply
from pg_outage import RestartablePostgres, SilentProxy

import pilothouse

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def restartable():
    """A PostgreSQL of this module's own: the tests crash it and start it again."""
    server = RestartablePostgres()
    yield server
    server.close()


@pytest.fixture
def pg(restartable):
    """The restartable server, up, with a fresh database: (server, URL)."""
    if not _accepts(restartable.url):
        restartable.start()
    return restartable, restartable.database()


def _accepts(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


class Gate:
    """A model reply that waits until the test opens the gate (and says it is waiting)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.waiting = anyio.Event()
        self.open = anyio.Event()

    async def __call__(self, request):
        self.waiting.set()
        await self.open.wait()
        return text_reply(self.text)


class GatedPlugin:
    """A ``gated`` model provider whose replies can wait at gates."""

    __name__ = "gated"

    def __init__(self) -> None:
        self.replies: list = []
        self.requests: list = []

    @pilothouse.hookimpl
    def register_models(self, register):
        plugin = self

        class _Model(pilothouse.Model):
            provider, name = "gated", "model"

            async def complete(self, request):
                plugin.requests.append(request)
                reply = plugin.replies.pop(0) if plugin.replies else text_reply("done")
                if isinstance(reply, Gate):
                    return await reply(request)
                return reply

        class _Provider(pilothouse.ModelProvider):
            name = "gated"

            def model(self, name):
                return _Model()

        register(_Provider())


THREE_STEPS = crew(
    {"type": "sequential", "steps": ["a", "b", "c"]},
    {name: {"instructions": f"You are {name}.", "model": "gated:model"} for name in "abc"},
)


def _events(url: str, run_id: str) -> list[str]:
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT type FROM events WHERE run_id = %s ORDER BY seq", (run_id,))
        return [t for (t,) in rows]


async def test_a_run_holds_its_finished_step_while_postgres_is_down(workspace, pg):
    """PostgreSQL crashes while step b's model call is out; the call comes back during
    the outage; the run waits at its barrier (not failed), and when the server is back
    the step is committed once, with no model call made again."""
    server, url = pg
    plugin = GatedPlugin()
    gate = Gate("b's answer")
    plugin.replies = [text_reply("a's answer"), gate, text_reply("c's answer")]
    settings = pilothouse.load_settings(store_url=url, store_timeout_s=5)
    async with pilothouse.Runtime(settings, plugins=[plugin]) as rt:
        result: list[pilothouse.RunResult] = []

        async def go() -> None:
            result.append(await rt.run(THREE_STEPS, "the job"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(go)
            with anyio.fail_after(60):
                await gate.waiting.wait()
            server.crash()
            gate.open.set()
            store = rt.store
            assert store is not None
            with anyio.fail_after(60):  # the barrier's commit found the server gone
                while not store.health.down:
                    await anyio.sleep(0.02)
            assert not result  # the run waits: neither failed nor finished
            await anyio.to_thread.run_sync(server.start)
        assert result[0].ok, result[0].error
        assert result[0].output == "c's answer"
        assert not store.health.down and store.health.outages == 1
    types = _events(url, result[0].run_id)
    assert types.count("step_finished") == 3 and types.count("model_call") == 3
    assert len(plugin.requests) == 3  # no model call was made again
    assert types[-1] == "run_finished"
