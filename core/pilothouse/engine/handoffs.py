"""Handoffs as model tools: a persona hands its work on by calling ``transfer_to_<name>``.

Model APIs take function names of 1-64 letters, digits, ``_`` or ``-``; a persona's
name may hold other characters, so its tool's name is made safe here, and a crew
whose names would clash is refused before it runs.
"""

from __future__ import annotations

import re

from ..crew import HANDOFF_PREFIX, Persona
from ..errors import ConfigError
from ..model import ToolSpec


def handoff_tool(target: str) -> str:
    """The name of the tool that hands work to ``target``: a persona name may hold
    characters (``.``) or a length that model APIs refuse in a function name."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", target)
    return (HANDOFF_PREFIX + safe)[:64]


def check_handoff_tools(crew: str, persona: Persona, targets: list[str]) -> None:
    """Refuse routes whose handoff tools would share a name with each other or with
    one of the persona's tools (the model could not tell them apart)."""
    seen = {tool: f"tool {tool!r}" for tool in persona.tools}
    for target in targets:
        tool = handoff_tool(target)
        if tool in seen:
            raise ConfigError(
                f"crew {crew!r}, persona {persona.name!r}: the handoff to {target!r} would be"
                f" offered as {tool!r}, like {seen[tool]}; rename one of them"
            )
        seen[tool] = f"the handoff to {target!r}"


def handoff_spec(target: str, persona: Persona) -> ToolSpec:
    """The tool a model calls to hand the work to ``target`` with a message."""
    about = persona.description or persona.instructions.split(".")[0]
    return ToolSpec(
        name=handoff_tool(target),
        description=f"Hand the work to {target}. {about}".strip(),
        parameters={
            "type": "object",
            "properties": {"message": {"type": "string", "description": "What they should do."}},
            "required": ["message"],
        },
    )
