"""Agents of other teams as personas, over the Agent2Agent protocol (the ``a2a`` extra,
on the official ``a2a-sdk``).

``[plugins.a2a.agents.NAME]`` names a remote agent by ``url`` (its agent card is read
from ``/.well-known/agent-card.json`` there, once), with ``headers`` (``${VAR}`` from
the environment, never logged), ``timeout_s`` and an optional ``description``. A crew
lists NAME like any persona: the step sends its input to the agent as a message,
streams the task's progress into the live view, and takes the task's artifacts as its
output, which the persona's guardrails check like any model's. The remote task's id is
logged as the call's request id.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from pilothouse import Persona, hookimpl


class AgentSettings(BaseModel):
    """One remote A2A agent."""

    model_config = {"extra": "forbid"}

    #: where the agent is served (its card at URL/.well-known/agent-card.json)
    url: str
    #: sent with every request (``${VAR}`` read from the environment)
    headers: dict[str, str] = Field(default_factory=dict)
    #: the longest one task may take
    timeout_s: float = Field(default=300.0, gt=0)
    #: what the persona does (default: the agent card's description)
    description: str = ""


class A2ASettings(BaseModel):
    """``[plugins.a2a]``: remote agents crews may list as personas."""

    model_config = {"extra": "forbid"}

    agents: dict[str, AgentSettings] = Field(default_factory=dict)


@hookimpl
def register_settings(register: Any) -> None:
    """The section ``[plugins.a2a]``."""
    register("a2a", A2ASettings)


@hookimpl
def register_models(register: Any, settings: Any) -> None:
    """The ``a2a`` provider: ``a2a:NAME`` is the remote agent NAME."""
    from .remote import RemoteAgents

    register(RemoteAgents(settings.section("a2a")))


@hookimpl
def register_personas(register: Any, settings: Any) -> None:
    """A persona per configured agent, answering through it."""
    for name, agent in settings.section("a2a").agents.items():
        description = agent.description or f"The remote A2A agent at {agent.url}."
        register(Persona(name=name, description=description, model=f"a2a:{name}"))
