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


SETTINGS_MODULE = '''
import click
from pydantic import BaseModel, SecretStr

from pilothouse import hookimpl, load_settings


class WeatherSettings(BaseModel):
    model_config = {"extra": "forbid"}
    city: str = "Bergen"
    units: str = "metric"
    days: int = 1
    api_key: SecretStr | None = None


@hookimpl
def register_settings(register):
    register("weather", WeatherSettings)


@hookimpl
def register_commands(cli):
    @cli.command()
    def weather():
        """Say the weather settings."""
        from pilothouse import Runtime

        section = Runtime(load_settings(), log_events=False).settings.section("weather")
        key = "yes" if section.api_key else "no"
        click.echo(f"{section.city} {section.units} {section.days} key:{key}")
'''


def _installed(tmp_path, module: str):
    """A third-party plugin package made here and installed with pip (no network)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(PACKAGE_PYPROJECT)
    (src / "pilothouse_weather.py").write_text(module)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(src)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    return {"PYTHONPATH": os.pathsep.join([str(target), *sys.path])}


def test_a_plugin_has_settings_of_its_own_and_a_command(tmp_path, workspace):
    env = _installed(tmp_path, SETTINGS_MODULE)
    (workspace / "pilothouse.toml").write_text(
        '[plugins.weather]\ncity = "Oslo"\ndays = 3\napi_key = "wk-secret-0042"\n'
    )
    env["PILOTHOUSE_PLUGINS__WEATHER__UNITS"] = "imperial"  # the environment wins
    said = _pilothouse("weather", env=env, cwd=workspace)
    assert said.returncode == 0, said.stderr
    assert said.stdout.strip() == "Oslo imperial 3 key:yes"
    listed = _pilothouse("plugins", env=env, cwd=workspace)
    block = listed.stdout.split("weather  [ok]")[1].split("\n\n")[0]
    assert "settings: [plugins.weather]" in block and "commands: weather" in block
    shown = _pilothouse("config", env=env, cwd=workspace)
    rows = {line.split()[0]: line for line in shown.stdout.splitlines() if line.strip()}
    assert '"Oslo"' in rows["plugins.weather.city"] and "pilothouse.toml" in rows[
        "plugins.weather.city"]  # fmt: skip
    assert "env PILOTHOUSE_PLUGINS__WEATHER__UNITS" in rows["plugins.weather.units"]
    assert '"********"' in rows["plugins.weather.api_key"]
    assert "wk-secret-0042" not in shown.stdout + shown.stderr + listed.stdout + listed.stderr
    # a bad value: one line naming the file, the section and the field; exit 3
    (workspace / "pilothouse.toml").write_text('[plugins.weather]\ndays = "many"\n')
    bad = _pilothouse("run", "marketing", "-i", "x", env=env, cwd=workspace)
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 3 and len(lines) == 1, bad.stderr
    assert "[plugins.weather] days (pilothouse.toml)" in lines[0] and "integer" in lines[0]
    # other plugins still load; the listing says what is wrong and exits 3
    listed = _pilothouse("plugins", env=env, cwd=workspace)
    assert listed.returncode == 3 and "weather  [FAILED]" in listed.stdout
    assert "demo  [ok]" in listed.stdout
    (workspace / "pilothouse.toml").write_text('[plugins.weather]\ncitty = "Oslo"\n')
    typo = _pilothouse("run", "marketing", "-i", "x", env=env, cwd=workspace)
    assert typo.returncode == 3 and "did you mean 'city'?" in typo.stderr


def test_settings_that_moved_keep_working_from_their_old_place(tmp_path, workspace, caplog):
    """Old keys and variables are read into their new place, each with one notice."""
    import logging

    (workspace / "pilothouse.toml").write_text('grounded_judge = "offline"\n')
    env = {"PILOTHOUSE_OFFLINE_DELAY_MS": "7", "PILOTHOUSE_OTEL": "off"}
    caplog.set_level(logging.WARNING)
    for key, value in env.items():
        os.environ[key] = value
    try:
        settings = pilothouse.load_settings()
        rt = pilothouse.Runtime(settings, log_events=False)
    finally:
        for key in env:
            del os.environ[key]
    assert rt.settings.section("offline").delay_ms == 7
    assert rt.settings.section("guardrails").grounded_judge == "offline"
    assert rt.settings.section("otel").export == "off"
    assert settings.plugin_source("offline", "delay_ms") == "env PILOTHOUSE_OFFLINE_DELAY_MS"
    said = " ".join(settings._notices)
    assert "'offline_delay_ms' is now 'delay_ms' in [plugins.offline]" in said
    assert "'grounded_judge' is now 'grounded_judge' in [plugins.guardrails]" in said
    # the old module list
    (tmp_path / "mods").mkdir()
    _write_module(tmp_path / "mods", "legacy_mod", """
        from pilothouse import hookimpl, tool
        @tool
        def legacy_ping() -> str:
            "Answers pong."
            return "pong"
        @hookimpl
        def register_tools(register):
            register(legacy_ping)
        """)  # fmt: skip
    env = {"PILOTHOUSE_PLUGINS": "legacy_mod", "PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS": "2",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "mods"), *sys.path])}  # fmt: skip
    done = _pilothouse("plugins", env=env, cwd=workspace)
    assert done.returncode == 0 and "legacy_mod  [ok]" in done.stdout, done.stderr
    assert "tools: legacy_ping" in done.stdout
    assert "now holds plugins' own settings sections" in done.stderr


def test_plugin_new_writes_a_package_that_installs_loads_and_passes_its_tests(tmp_path):
    """The issue's end to end: 'pilothouse plugin new', pip install (no network), its own
    tests on pilothouse.testing pass, it shows in 'pilothouse plugins', it takes its
    settings from the file and the environment, and its command runs."""
    made = _pilothouse("plugin", "new", "acme", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    package = tmp_path / "pilothouse-acme"
    assert (package / "pyproject.toml").is_file() and (package / "tests" / "test_acme.py").is_file()
    again = _pilothouse("plugin", "new", "acme", cwd=tmp_path)
    assert again.returncode == 2 and "exists already" in again.stderr
    bad = _pilothouse("plugin", "new", "Acme-Co", cwd=tmp_path)
    assert bad.returncode == 2 and "lowercase" in bad.stderr
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(package)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    env = {"PYTHONPATH": os.pathsep.join([str(target), *sys.path])}
    env |= {k: "" for k in os.environ if k.startswith("PILOTHOUSE_")}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(package / "tests")], cwd=package, capture_output=True,
                           text=True, timeout=300, env={**os.environ, **env})  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert " passed" in tests.stdout and "skipped" not in tests.stdout
    work = tmp_path / "work"
    work.mkdir()
    (work / "pilothouse.toml").write_text('[plugins.acme]\ngreeting = "Hei"\napi_key = "ak-77"\n')
    listed = _pilothouse("plugins", env=env, cwd=work)
    assert listed.returncode == 0, listed.stderr
    block = listed.stdout.split("acme  [ok]")[1].split("\n\n")[0]
    assert "tools: acme_greet" in block and "settings: [plugins.acme]" in block
    assert "commands: acme" in block
    said = _pilothouse("acme", env=env, cwd=work)
    assert said.stdout.strip() == "acme: greeting 'Hei', api_key set", said.stderr
    env["PILOTHOUSE_PLUGINS__ACME__GREETING"] = "Moin"
    said = _pilothouse("acme", env=env, cwd=work)
    assert said.stdout.strip() == "acme: greeting 'Moin', api_key set"
    shown = _pilothouse("config", env=env, cwd=work)
    assert "ak-77" not in shown.stdout + shown.stderr
    assert "plugins.acme.greeting" in shown.stdout
