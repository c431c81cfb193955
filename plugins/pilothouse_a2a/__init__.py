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

from pydantic import BaseModel, Field, SecretStr

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
    #: a JSON schema its output must follow (checked like any persona's; a reply that
    #: does not fit is sent back with what is wrong, a bounded number of times)
    output_schema: dict[str, Any] | None = None


class ServeSettings(BaseModel):
    """``[plugins.a2a.serve]``: this workspace's crews served as A2A agents."""

    model_config = {"extra": "forbid"}

    host: str = "127.0.0.1"
    port: int = Field(default=8766, ge=0, le=65535)
    #: callers must send ``Authorization: Bearer TOKEN`` (needed off loopback)
    token: SecretStr | None = None
    #: the crews offered (none: every crew)
    crews: list[str] = Field(default_factory=list)


class A2ASettings(BaseModel):
    """``[plugins.a2a]``: remote agents crews may list as personas, and how this
    workspace's crews are served as A2A agents."""

    model_config = {"extra": "forbid"}

    agents: dict[str, AgentSettings] = Field(default_factory=dict)
    serve: ServeSettings = Field(default_factory=ServeSettings)


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
        register(Persona(name=name, description=description, model=f"a2a:{name}",
                         output_schema=agent.output_schema))  # fmt: skip


@hookimpl
def register_commands(cli: Any) -> None:
    """``pilothouse a2a serve``."""
    import anyio
    import click

    from pilothouse import Runtime, token_off_loopback

    @cli.group(name="a2a")
    def a2a() -> None:
        """Agents across teams over A2A."""

    @a2a.command(name="serve")
    @click.option("--host", help="Where to listen ([plugins.a2a.serve] host: 127.0.0.1).")
    @click.option("--port", type=int, help="Port ([plugins.a2a.serve] port; 0: any free one).")
    @click.pass_obj
    def serve(obj: Any, host: str | None, port: int | None) -> None:
        """Serve each crew as an A2A agent at http://HOST:PORT/crews/NAME/ (its agent
        card there): a message runs the crew, steps are status updates, the output an
        artifact, an escalation input-required."""
        from .serving import serve as serving

        runtime = Runtime(obj.settings)
        wanted = runtime.settings.section("a2a").serve
        host = host or wanted.host
        token = wanted.token.get_secret_value() if wanted.token else None
        token_off_loopback(host, token, "a2a.serve")
        anyio.run(serving, runtime, host, wanted.port if port is None else port, token,
                  wanted.crews)  # fmt: skip
