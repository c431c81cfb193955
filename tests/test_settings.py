"""Settings: env over pilothouse.toml over defaults, each value's source known, secrets masked."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilothouse import ConfigError, load_settings
from pilothouse.settings import mask


def test_defaults(workspace):
    s = load_settings()
    assert s.workspace == Path(".pilothouse") and s.default_model == "offline"
    assert s.store_path == Path(".pilothouse/runs.db")
    assert s.source_of("default_model") == "default"


def test_env_beats_workspace_file_beats_project_file(workspace, monkeypatch):
    (workspace / "pilothouse.toml").write_text(
        'default_model = "project-model"\n[plugins.offline]\ndelay_ms = 5\n[plugins.x]\na = 1\n'
    )
    (workspace / ".pilothouse").mkdir()
    (workspace / ".pilothouse" / "pilothouse.toml").write_text(
        'default_model = "workspace-model"\nplugin_modules = ["a", "b"]\n'
        "[model_aliases]\nfast = 'offline:fast'\n[plugins.x]\nb = 2\n"
    )
    monkeypatch.setenv("PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS", "7")
    monkeypatch.setenv("PILOTHOUSE_DISABLE_PLUGINS", "x, y")
    s = load_settings()
    assert s.default_model == "workspace-model"
    assert s.source_of("default_model") == str(Path(".pilothouse/pilothouse.toml"))
    # a plugin's section: the environment over the files, the files merged key by key
    assert s.plugins["offline"] == {"delay_ms": 7} and s.plugins["x"] == {"a": 1, "b": 2}
    assert s.plugin_source("offline", "delay_ms") == "env PILOTHOUSE_PLUGINS__OFFLINE__DELAY_MS"
    assert s.plugin_source("x", "b") == str(Path(".pilothouse/pilothouse.toml"))
    assert s.plugin_modules == ["a", "b"] and s.disable_plugins == ["x", "y"]
    assert s.model_aliases == {"fast": "offline:fast"}
    assert load_settings(default_model="arg").source_of("default_model") == "argument"


def test_a_bad_value_names_the_key_and_where_it_came_from(workspace, monkeypatch):
    monkeypatch.setenv("PILOTHOUSE_SYNCHRONOUS", "sometimes")
    with pytest.raises(ConfigError, match=r"synchronous \(env PILOTHOUSE_SYNCHRONOUS\)"):
        load_settings()


def test_a_bad_value_deep_in_a_table_names_its_whole_path(workspace):
    (workspace / "pilothouse.toml").write_text(
        '[endpoints.local]\nbase_url = "http://127.0.0.1:1/v1"\nmax_concurrency = "many"\n'
    )
    with pytest.raises(
        ConfigError, match=r"endpoints\.local\.max_concurrency \(pilothouse.toml\): Input should"
    ):
        load_settings()


def test_an_unknown_key_in_a_file_is_an_error(workspace):
    (workspace / "pilothouse.toml").write_text('defualt_model = "x"\n')
    with pytest.raises(
        ConfigError,
        match=r"defualt_model \(pilothouse.toml\): Extra inputs .*; did you mean 'default_model'\?",
    ):
        load_settings()
    # a key inside a table is matched against every key the settings take
    (workspace / "pilothouse.toml").write_text(
        '[endpoints.local]\nbase_ur = "http://127.0.0.1:1/v1"\n'
    )
    with pytest.raises(ConfigError, match=r"endpoints\.local\.base_ur .*did you mean 'base_url'\?"):
        load_settings()


def test_a_variable_that_names_no_setting_is_an_error(workspace, monkeypatch):
    monkeypatch.setenv("PILOTHOUSE_DEFUALT_MODEL", "offline:x")
    with pytest.raises(
        ConfigError,
        match=r"PILOTHOUSE_DEFUALT_MODEL \(env\) is not a setting of pilothouse;"
        r" did you mean PILOTHOUSE_DEFAULT_MODEL\?",
    ):
        load_settings()
    monkeypatch.delenv("PILOTHOUSE_DEFUALT_MODEL")
    monkeypatch.setenv("PILOTHOUSE_API_KEY", "sk-x")  # like no setting: no guess
    with pytest.raises(ConfigError, match=r"PILOTHOUSE_API_KEY \(env\) is not a setting") as info:
        load_settings()
    assert "did you mean" not in str(info.value)
    monkeypatch.delenv("PILOTHOUSE_API_KEY")
    # a nested setting's variable is known by its first part
    monkeypatch.setenv("PILOTHOUSE_ENDPOINTS__LOCAL__BASE_URL", "http://127.0.0.1:9/v1")
    assert load_settings().endpoints["local"].base_url == "http://127.0.0.1:9/v1"


def test_invalid_toml_names_the_file(workspace):
    (workspace / "pilothouse.toml").write_text("default_model = \n")
    with pytest.raises(ConfigError, match=r"pilothouse.toml: invalid TOML"):
        load_settings()


def test_secrets_are_masked():
    assert mask("openai_api_key", "sk-live-123") == '"********"'
    assert (
        mask("aliases", {"fast": "offline:x", "token": "abc"})
        == '{ fast = "offline:x", token = "********" }'
    )
    assert mask("default_model", "offline") == '"offline"'


def test_values_are_shown_as_toml_writes_them():
    assert [mask("x", v) for v in (None, False, True, 15.0, 3, [], ["a"], {})] == [
        "(unset)", "false", "true", "15.0", "3", "[]", '["a"]', "{}",
    ]  # fmt: skip
    nested = mask("prices", {"local:llama3": {"input": 0.5}})
    assert nested == '{ "local:llama3" = { input = 0.5 } }'


def test_config_shows_the_decider_that_will_be_recorded_and_lines_up(workspace):
    import getpass
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    shown = subprocess.run([sys.executable, "-m", "pilothouse", "config"], cwd=workspace,
                           env=env, capture_output=True, text=True, timeout=60).stdout  # fmt: skip
    rows = {line.split()[0]: line for line in shown.splitlines()}
    assert f'"{getpass.getuser()}"' in rows["decider"] and "your OS user" in rows["decider"]
    assert "None" not in shown and "False" not in shown and "True" not in shown
    assert "false" in rows["trace_hooks"] and "(unset: the SQLite file" in rows["store_url"]
    columns = {line.index(line.split()[1]) for line in shown.splitlines() if line.strip()}
    assert len(columns) == 1, shown  # one column for the values, long names included


def test_secrets_in_an_endpoints_url_and_headers_are_masked():
    from pilothouse.settings import Endpoint

    endpoint = Endpoint(
        base_url="http://alice:pw-in-url@127.0.0.1:8000/v1?api-version=2024&api-key=qk-1",
        api_key="sk-2",
        headers={"X-Api-Key": "hk-3", "X-Team": "blue"},
    )
    shown = mask("local", endpoint)
    url = "http://alice:********@127.0.0.1:8000/v1?api-version=2024&api-key=********"
    assert f'base_url = "{url}"' in shown
    assert 'headers = { X-Api-Key = "********", X-Team = "blue" }' in shown
    for secret in ("pw-in-url", "qk-1", "sk-2", "hk-3"):
        assert secret not in shown
    assert set(endpoint.secrets()) == {"pw-in-url", "qk-1", "sk-2", "hk-3"}
    assert mask("base_url", "https://api.openai.com/v1") == '"https://api.openai.com/v1"'
