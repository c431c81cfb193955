"""Remote agents over A2A as personas: an agent built with the a2a-sdk's own server
classes, called from a crew through the SDK's client."""

from __future__ import annotations

import pytest

from pilothouse.testing import crew_of, reply, run_crew

pytestmark = pytest.mark.slow


@pytest.fixture
def desk():
    """The fraud desk agent on 127.0.0.1: (executor, URL)."""
    from a2a_agent import FraudDesk, serve

    executor = FraudDesk()
    with serve(executor) as served:
        yield executor, served.url


def _agents(**agents):
    return {"a2a": {"agents": agents}}


async def test_a_remote_agent_is_a_persona_of_a_crew(ph_runtime, ph_model, desk, monkeypatch):
    executor, url = desk
    monkeypatch.setenv("FRAUD_TOKEN", "t0ken-for-tests")
    ph_model.enqueue(reply("Application 17: income 52k, loan 10k, two prior loans repaid."))
    crew = crew_of({"type": "sequential", "steps": ["intake", "fraud"]},
                   {"intake": {"instructions": "Summarise the application."}})  # fmt: skip
    agent = {"url": url, "headers": {"Authorization": "Bearer ${FRAUD_TOKEN}"}}
    async with ph_runtime(plugins=_agents(fraud=agent)) as rt:
        result, events = await run_crew(rt, crew, "Check application 17")
    assert result.ok, result.error
    assert result.output == "Fraud risk: low. \n" + result.output.split("\n", 1)[1]
    assert result.output.endswith("words checked.")
    (sent,) = executor.received
    assert "Application 17: income 52k" in sent  # the step's input, with what came before
    assert executor.headers[0]["authorization"] == "Bearer t0ken-for-tests"
    (call,) = [e for e in events if e.type == "model_call" and e.model == "a2a:fraud"]
    assert call.request_id and call.usage.estimated  # the remote task's id is logged
    steps = [e.persona for e in events if e.type == "step_finished"]
    assert steps == ["intake", "fraud"]
    assert not any("t0ken" in e.model_dump_json() for e in events)  # never logged


@pytest.mark.parametrize(
    ("asked", "says"),
    [
        ("explode", "the task ended failed: records offline"),
        ("refuse", "the task ended rejected: out of scope"),
    ],
)
async def test_a_task_that_fails_fails_the_step_with_the_agents_words(
    ph_runtime, desk, asked, says
):
    _executor, url = desk
    crew = crew_of({"type": "sequential", "steps": ["fraud"]}, {})
    async with ph_runtime(plugins=_agents(fraud={"url": url})) as rt:
        result, _events = await run_crew(rt, crew, f"please {asked}")
    assert not result.ok and says in result.error and "A2A agent 'fraud'" in result.error


async def test_an_unreachable_agent_is_named(ph_runtime):
    crew = crew_of({"type": "sequential", "steps": ["fraud"]}, {})
    async with ph_runtime(plugins=_agents(fraud={"url": "http://127.0.0.1:9"})) as rt:
        result, _events = await run_crew(rt, crew, "anything")
    assert not result.ok
    assert "A2A agent 'fraud' at http://127.0.0.1:9: cannot read its agent card" in result.error
