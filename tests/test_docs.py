"""Docs that cannot drift: the README's plugin example and crew file work as written."""

from __future__ import annotations

import re
from pathlib import Path

import pilothouse
from conftest import text_reply

README = (Path(__file__).parent.parent / "README.md").read_text()


def _block(language: str, first_line: str) -> str:
    for body in re.findall(rf"```{language}\n(.*?)```", README, re.S):
        if body.startswith(first_line):
            return body
    raise AssertionError(f"no {language} block starting with {first_line!r} in the README")


async def test_the_readme_plugin_example_loads_and_runs(workspace, monkeypatch, scripted):
    (workspace / "pilothouse_weather.py").write_text(_block("python", "# pilothouse_weather.py"))
    monkeypatch.syspath_prepend(str(workspace))
    settings = pilothouse.load_settings(
        plugin_modules="pilothouse_weather", default_model="scripted"
    )
    async with pilothouse.Runtime(settings, plugins=[scripted]) as rt:
        registered = rt.plugins.info["pilothouse_weather"].registered
        assert registered == {
            "personas": ["forecaster"],
            "tools": ["forecast"],
            "guardrails": ["no_umbrella_advice"],
        }
        scripted.provider.enqueue(text_reply("Take an umbrella."))
        crew = pilothouse.Crew(
            name="w",
            flow={"type": "sequential", "steps": ["forecaster"]},
            escalation={"timeout_s": 0, "on_timeout": "approve"},
        )
        result = await rt.run(crew, "Weather in Oslo?")
        events = rt.store.events(result.run_id)
    verdicts = [e for e in events if e.type == "guardrail"]
    decided = next(e for e in events if e.type == "escalation_decided")
    assert result.ok and verdicts[0].action == "flag"
    assert (decided.decision, decided.by) == ("approve", "policy:timeout")
    assert [t.name for t in scripted.provider.requests[0].tools] == ["forecast"]


async def test_the_readme_crew_file_runs_by_name(workspace):
    (workspace / "crews").mkdir()
    (workspace / "crews" / "helpdesk.toml").write_text(_block("toml", 'name = "helpdesk"'))
    async with pilothouse.Runtime(pilothouse.load_settings()) as rt:
        crew = rt.crew("helpdesk")
        assert crew.flow.type == "handoff" and crew.limits.max_cost_usd == 0.5
        assert crew.personas["billing"].guardrails.output == ["redact_pii"]
        result = await rt.run("helpdesk", "My invoice 42 was charged twice.")
        started = [e for e in rt.store.events(result.run_id) if e.type == "step_started"]
    assert result.ok, result.error
    assert started[0].persona == "triage"


def test_the_readme_endpoint_config_loads(workspace, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-readme-0123456789abcdefgh")
    (workspace / "pilothouse.toml").write_text(_block("toml", 'default_model = "local:llama3"'))
    settings = pilothouse.load_settings()
    assert settings.endpoints["local"].max_concurrency == 16
    assert settings.endpoints["hosted"].key() == "sk-readme-0123456789abcdefgh"
    assert settings.model_aliases == {"fast": "hosted:gpt-4o-mini"}
    rt = pilothouse.Runtime(settings, log_events=False)
    assert {"local", "hosted", "openai"} <= set(rt.registry.models)
    assert rt.engine.calls.resolve("fast").id == "hosted:gpt-4o-mini"
    shown = " ".join(row["value"] for row in settings.describe())
    assert "sk-readme" not in shown and 'api_key_env = "OPENAI_API_KEY"' in shown


def test_the_readme_escalation_rules_are_valid():
    import tomllib

    from pilothouse.crew import EscalationRules

    rules = EscalationRules.model_validate(
        tomllib.loads(_block("toml", "[escalation]"))["escalation"]
    )
    assert (rules.on_timeout, rules.on_reject, rules.max_revisions) == ("reject", "revise", 2)


def test_every_setting_is_in_the_readme_table():
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", README, re.M))
    assert set(pilothouse.Settings.model_fields) <= documented


def test_every_cli_command_is_in_the_readme():
    from pilothouse.cli import cli

    for name in cli.commands:
        assert f"pilothouse {name}" in README or f"`{name} " in README, name


def test_the_documentation_site_builds_strict_with_generated_references(tmp_path):
    """mkdocs.yml builds site/ with --strict; the references list every hook and command."""
    import os
    import subprocess
    import sys

    root = Path(__file__).parent.parent
    out = tmp_path / "html"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
        cwd=root, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    hooks = (out / "reference" / "hooks.html").read_text()
    for name in ("register_models", "register_personas", "register_tools", "register_retrievers",
                 "register_guardrails", "register_crews", "on_event"):  # fmt: skip
        assert f"<code>{name}(" in hooks, name
    commands = (out / "reference" / "cli.html").read_text()
    for command in ("pilothouse run", "pilothouse tui", "pilothouse portal build",
                    "pilothouse approve", "pilothouse metrics"):  # fmt: skip
        assert command in commands, command
    settings = (out / "reference" / "settings.html").read_text()
    assert "PILOTHOUSE_REDACT_EMAILS" in settings and "PILOTHOUSE_DEFAULT_MODEL" in settings
    api = (out / "reference" / "api.html").read_text()
    missing = [name for name in pilothouse.__all__ if f"<code>{name}" not in api]
    assert missing == []  # the reference is the public API, generated from __all__


def test_the_site_plugin_example_is_the_readme_one():
    site = (Path(__file__).parent.parent / "site" / "plugins.md").read_text()
    assert _block("python", "# pilothouse_weather.py") in site


def test_the_audits_page_plugin_example_registers_its_data(workspace, monkeypatch, tmp_path):
    page = (Path(__file__).parent.parent / "site" / "audits.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "hookimpl" in b]
    (workspace / "my_probes.py").write_text(block)
    monkeypatch.syspath_prepend(str(workspace))
    rt = pilothouse.Runtime(pilothouse.load_settings(plugin_modules="my_probes"), log_events=False)
    assert rt.plugins.info["my_probes"].registered == {
        "attribute_sets": ["religion"], "payloads": ["refund-1"]}  # fmt: skip
    # and the page's cases-file examples are valid cases files
    from pilothouse.audits.bias import load_cases

    for n, body in enumerate(re.findall(r"```toml\n(.*?)```", page, re.S)):
        if "[[case]]" not in body:
            body += '[[case]]\ntext = "{school}"\n'
        (tmp_path / f"c{n}.toml").write_text(body)
        assert load_cases(tmp_path / f"c{n}.toml").case
