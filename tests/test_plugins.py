"""Plugin loading: bundled entry points, a third-party package installed here, failures isolated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pilothouse

PACKAGE_PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "pilothouse-weather"
version = "0.3.0"

[project.entry-points.pilothouse]
weather = "pilothouse_weather"
"""

PACKAGE_MODULE = '''
from pilothouse import Persona, hookimpl, tool

@tool
def forecast(city: str, days: int = 1) -> str:
    """Weather forecast for a city."""
    return f"{city}: sunny for {days} day(s)"

@hookimpl
def register_tools(register):
    register(forecast)

@hookimpl
def register_personas(register):
    register(Persona(name="forecaster", instructions="You are the forecaster.",
                     tools=["forecast"]))
'''


def _pilothouse(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "pilothouse", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=60,
    )


def test_bundled_plugins_load_through_the_entry_point_group(workspace):
    rt = pilothouse.Runtime(log_events=False)
    info = rt.plugins.info
    assert {"offline", "guardrails", "demo"} <= set(info)
    assert info["demo"].source.startswith("entry point (pilothouse ")
    assert info["offline"].registered == {"models": ["offline"]}
    assert set(info["guardrails"].registered["guardrails"]) == {
        "redact_pii",
        "no_secrets",
        "risky_claims",
        "grounded",
        "prompt_injection",
    }
    assert rt.registry.crews["marketing"].plugin == "demo"
    assert not rt.plugins.errors


def test_a_third_party_package_installed_with_pip_is_found(tmp_path, workspace):
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(PACKAGE_PYPROJECT)
    (src / "pilothouse_weather.py").write_text(PACKAGE_MODULE)
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {"PYTHONPATH": os.pathsep.join([str(target), *sys.path])}
    done = _pilothouse("plugins", "--json", env=env)
    assert done.returncode == 0, done.stderr
    plugins = {p["name"]: p for p in json.loads(done.stdout)}
    weather = plugins["weather"]
    assert weather["loaded"] and weather["source"] == "entry point (pilothouse-weather 0.3.0)"
    assert weather["registered"] == {"personas": ["forecaster"], "tools": ["forecast"]}
    assert plugins["demo"]["loaded"]


def _write_module(folder, name, body):
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


def test_failing_plugins_are_named_and_the_others_still_load(tmp_path, workspace, monkeypatch):
    mods = tmp_path / "mods"
    mods.mkdir()
    _write_module(mods, "broken_import", "import does_not_exist_anywhere\n")
    _write_module(
        mods,
        "broken_register",
        """
        from pilothouse import hookimpl
        @hookimpl
        def register_tools(register):
            raise RuntimeError("no config for the weather API")
        """,
    )
    _write_module(
        mods,
        "wrong_type",
        """
        from pilothouse import hookimpl
        @hookimpl
        def register_guardrails(register):
            register("not a guardrail")
        """,
    )
    _write_module(
        mods,
        "duplicate",
        """
        from pilothouse import hookimpl, tool
        @tool
        def market_size(segment: str) -> str:
            "Another market_size."
            return ""
        @hookimpl
        def register_tools(register):
            register(market_size)
        """,
    )
    _write_module(
        mods,
        "good",
        """
        from pilothouse import hookimpl, tool
        @tool
        def ping() -> str:
            "Answers pong."
            return "pong"
        @hookimpl
        def register_tools(register):
            register(ping)
        """,
    )
    monkeypatch.syspath_prepend(str(mods))
    names = "broken_import,broken_register,wrong_type,duplicate,good"
    rt = pilothouse.Runtime(pilothouse.load_settings(plugins=names), log_events=False)
    errors = {e.plugin: str(e) for e in rt.plugins.errors}
    assert "No module named 'does_not_exist_anywhere'" in errors["broken_import"]
    assert (
        "register_tools raised RuntimeError: no config for the weather API"
        in errors["broken_register"]
    )
    assert "register_guardrails expects Guardrail, got str" in errors["wrong_type"]
    assert "tool 'market_size' is already registered by 'demo'" in errors["duplicate"]
    assert set(errors) == {"broken_import", "broken_register", "wrong_type", "duplicate"}
    assert rt.registry.tools["ping"].plugin == "good"
    assert rt.registry.tools["market_size"].plugin == "demo"
    assert "marketing" in rt.registry.crews

    # the CLI shows the same, and exits 0: a broken plugin is not a broken installation
    done = _pilothouse(
        "plugins",
        env={"PILOTHOUSE_PLUGINS": names, "PYTHONPATH": os.pathsep.join([str(mods), *sys.path])},
    )
    assert done.returncode == 0
    assert "broken_import  [FAILED]" in done.stdout and "good  [ok]" in done.stdout


def test_disable_plugins_skips_an_entry_point(workspace):
    rt = pilothouse.Runtime(pilothouse.load_settings(disable_plugins="demo"), log_events=False)
    assert "demo" not in rt.plugins.info and "marketing" not in rt.registry.crews
    assert "offline" in rt.registry.models


def test_hookspecs_document_every_hook():
    from pilothouse import hookspecs

    hooks = [name for name in dir(hookspecs) if name.startswith(("register_", "on_"))]
    assert set(hooks) >= {
        "register_models",
        "register_personas",
        "register_tools",
        "register_retrievers",
        "register_guardrails",
        "register_crews",
        "on_event",
    }
    for name in hooks:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert len(doc.split()) > 15, f"{name} needs a docstring a plugin author can follow"
