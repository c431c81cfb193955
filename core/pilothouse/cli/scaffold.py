"""``pilothouse plugin new NAME``: a third-party plugin package to start from.

It holds what a plugin usually has: a settings section, a tool, a guardrail that says
where, a command, and tests on :mod:`pilothouse.testing` that pass as it is written
(``pip install -e .`` then ``pytest``).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import click

from .base import cli

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "pilothouse-{dashed}"
version = "0.1.0"
description = "A pilothouse plugin: {name}."
requires-python = ">=3.11"
dependencies = ["pilothouse"]

[project.optional-dependencies]
test = ["pytest>=8", "anyio>=4"]

# pilothouse finds the plugin through this entry point, as it finds its own
[project.entry-points.pilothouse]
{name} = "pilothouse_{name}"

[tool.setuptools]
py-modules = ["pilothouse_{name}"]
"""

MODULE = '''\
"""pilothouse plugin {name}: a settings section, a tool, a guardrail and a command.

Settings: ``[plugins.{name}]`` in pilothouse.toml, or ``PILOTHOUSE_PLUGINS__{upper}__GREETING``.
"""

from __future__ import annotations

import re

import click
from pilothouse import Guardrail, Span, Verdict, hookimpl, load_settings, tool
from pydantic import BaseModel, SecretStr


class Settings(BaseModel):
    """The plugin's section of the workspace's configuration: ``[plugins.{name}]``."""

    model_config = {{"extra": "forbid"}}

    #: how the tool greets
    greeting: str = "Hello"
    #: a secret the plugin would need for a service (never shown by pilothouse)
    api_key: SecretStr | None = None


#: the settings the tool uses, set when the plugin registers it
_settings = Settings()


@tool
def {name}_greet(who: str) -> str:
    """Greet someone by name, as the plugin's settings say."""
    return f"{{_settings.greeting}}, {{who}}!"


class NoShouting(Guardrail):
    """Flags words written in capitals, and says where they are."""

    name = "{name}_no_shouting"

    def check(self, text, context):
        """Flag every all-capital word of four letters or more."""
        found = list(re.finditer(r"\\b[A-Z]{{4,}}\\b", text))
        if not found:
            return Verdict.ok()
        spans = [Span(start=m.start(), end=m.end(), label="shouting") for m in found]
        return Verdict(action="flag", reason=f"{{len(found)}} shouted word(s)", spans=spans,
                       risk=0.3, replacement=text.lower())


@hookimpl
def register_settings(register):
    """The section ``[plugins.{name}]``."""
    register("{name}", Settings)


@hookimpl
def register_tools(register, settings):
    """The tool, with this workspace's settings."""
    global _settings
    _settings = settings.section("{name}")
    register({name}_greet)


@hookimpl
def register_guardrails(register):
    """The guardrail."""
    register(NoShouting())


@hookimpl
def register_commands(cli):
    """``pilothouse {name}``: what the plugin's settings are here."""

    @cli.command(name="{name}")
    def show():
        """Show this plugin's settings (the secret masked)."""
        from pilothouse import Runtime

        section = Runtime(load_settings(), log_events=False).settings.section("{name}")
        key = "set" if section.api_key else "not set"
        click.echo(f"{name}: greeting {{section.greeting!r}}, api_key {{key}}")
'''

TESTS = '''\
"""The plugin's tests, on pilothouse's kit (pilothouse.testing: fixtures and contracts)."""

import pilothouse
import pytest
from pilothouse.testing import (
    GuardrailContract,
    ToolContract,
    call,
    crew_of,
    reply,
    run_crew,
)

import pilothouse_{name}


@pytest.fixture
def anyio_backend():
    """pilothouse runs on asyncio."""
    return "asyncio"


class TestGreetTool(ToolContract):
    tool = pilothouse_{name}.{name}_greet
    good_arguments = {{"who": "Ana"}}
    bad_arguments = {{"who": ["not", "a", "name"]}}


class TestNoShouting(GuardrailContract):
    guardrail = pilothouse_{name}.NoShouting()
    caught_text = "This is GREAT news for everyone."


@pytest.mark.anyio
async def test_a_crew_calls_the_tool_with_the_workspace_settings(ph_workspace, ph_runtime,
                                                                 ph_model):
    (ph_workspace / "pilothouse.toml").write_text('[plugins.{name}]\\ngreeting = "Hej"\\n')
    ph_model.enqueue(call("{name}_greet", who="Ana"), reply("Done."))
    crew = crew_of({{"type": "sequential", "steps": ["host"]}},
                   {{"host": {{"instructions": "Greet.", "tools": ["{name}_greet"]}}}})
    async with ph_runtime() as rt:
        assert "{name}" in rt.plugins.info and rt.plugins.info["{name}"].loaded
        result, events = await run_crew(rt, crew, "Greet Ana")
    assert result.ok
    (called,) = [e for e in events if e.type == "tool_call"]
    assert called.result == "Hej, Ana!"


def test_a_bad_setting_is_named(ph_workspace):
    (ph_workspace / "pilothouse.toml").write_text('[plugins.{name}]\\ngreting = "Hej"\\n')
    with pytest.raises(pilothouse.ConfigError, match=r"\\[plugins.{name}\\] greting"):
        pilothouse.Runtime(pilothouse.load_settings(), log_events=False)
'''

README = """\
# pilothouse-{dashed}

A pilothouse plugin. `pip install -e '.[test]'`, then `pilothouse plugins` lists it,
`pilothouse {name}` shows its settings and `pytest` runs its tests.

Settings (`pilothouse.toml`):

```toml
[plugins.{name}]
greeting = "Hello"
```
"""


@cli.group()
def plugin() -> None:
    """Write plugins: 'plugin new NAME' starts a package of your own."""


@plugin.command("new")
@click.argument("name")
@click.option("--into", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where the package's folder goes.")  # fmt: skip
def new(name: str, into: str) -> None:
    """Write pilothouse-NAME/: a plugin package with a settings section, a tool, a
    guardrail, a command and tests on pilothouse.testing that pass as written."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", name):
        raise click.BadParameter(
            f"{name!r}: use lowercase letters, digits and '_', starting with a letter",
            param_hint="NAME",
        )
    dashed = name.replace("_", "-")
    folder = Path(into) / f"pilothouse-{dashed}"
    if folder.exists():
        raise click.UsageError(f"{folder} exists already: pick another name or folder")
    values = {"name": name, "dashed": dashed, "upper": name.upper()}
    files = {
        "pyproject.toml": PYPROJECT,
        f"pilothouse_{name}.py": MODULE,
        f"tests/test_{name}.py": TESTS,
        "README.md": README,
    }
    for relative, template in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(template.format(**values)))
    click.echo(f"wrote {folder}/: cd {folder} && pip install -e '.[test]' && pytest")
