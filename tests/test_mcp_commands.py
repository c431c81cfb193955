"""``pilothouse mcp import`` (an mcp.json into pilothouse.toml) and ``pilothouse mcp list``
(servers, whether they start, their tools), run as a person runs them."""

from __future__ import annotations

import json
import sys
import tomllib

import pytest
from command import ph

pytestmark = pytest.mark.slow

CLAUDE = {
    "mcpServers": {
        "time": {"command": sys.executable,
                 "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]},
        "github": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"],
                   "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_s3cr3tvalue",
                           "GIT_AUTHOR_NAME": "Ana"}},
        "remote": {"url": "https://mcp.example.com/mcp",
                   "headers": {"Authorization": "Bearer sk-live-s3cr3t", "X-Team": "loans"}},
        "legacy": {"type": "sse", "url": "https://mcp.example.com/sse"},
        "off": {"command": "x", "disabled": True},
    }
}  # fmt: skip


def test_import_writes_servers_and_keeps_secrets_out(tmp_path):
    (tmp_path / "claude.json").write_text(json.dumps(CLAUDE))
    (tmp_path / "pilothouse.toml").write_text('default_model = "offline"\n')
    done = ph("mcp", "import", "claude.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    written = (tmp_path / "pilothouse.toml").read_text()
    config = tomllib.loads(written)
    assert config["default_model"] == "offline"  # what was there stays
    servers = config["plugins"]["mcp"]["servers"]
    assert set(servers) == {"time", "github", "remote"}
    assert servers["time"]["args"] == ["-m", "mcp_server_time", "--local-timezone", "UTC"]
    assert servers["github"]["env"] == {
        "GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_PERSONAL_ACCESS_TOKEN}", "GIT_AUTHOR_NAME": "Ana"
    }  # fmt: skip
    assert servers["remote"]["headers"] == {"Authorization": "Bearer ${REMOTE_TOKEN}",
                                            "X-Team": "loans"}  # fmt: skip
    said = done.stdout + done.stderr
    for secret in ("s3cr3t",):
        assert secret not in written and secret not in said
    assert "set GITHUB_PERSONAL_ACCESS_TOKEN in the environment" in done.stderr
    assert "set REMOTE_TOKEN in the environment" in done.stderr
    assert "legacy: skipped: it uses the old SSE transport" in done.stderr
    assert "off: skipped: disabled" in done.stderr
    assert "added time" in done.stdout and "mcp:time/*" in done.stdout

    again = ph("mcp", "import", "claude.json", cwd=tmp_path)
    assert again.returncode == 0
    assert "time: already in pilothouse.toml: left as it is there" in again.stderr
    assert "set GITHUB" not in again.stderr  # nothing said about servers not added
    assert (tmp_path / "pilothouse.toml").read_text() == written

    listed = ph("mcp", "list", "time", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "time " in listed.stdout and "ready, 2 tools" in listed.stdout
    (line,) = [ln for ln in listed.stdout.splitlines() if "get_current_time" in ln]
    assert "read-only" in line and "needs approval" not in line


def test_import_reads_vs_code_variables(tmp_path):
    folder = tmp_path / ".vscode"
    folder.mkdir()
    (folder / "mcp.json").write_text(json.dumps({
        "inputs": [{"type": "promptString", "id": "pg-password", "password": True}],
        "servers": {
            "pg": {"type": "stdio", "command": "uvx",
                   "args": ["mcp-pg", "${workspaceFolder}/data"],
                   "env": {"PGPASSWORD": "${input:pg-password}", "PGUSER": "${env:USER}"}},
            "web": {"type": "http", "url": "http://127.0.0.1:9000/mcp"},
        },
    }))  # fmt: skip
    done = ph("mcp", "import", ".vscode/mcp.json", "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "pilothouse.toml").exists()  # a dry run writes nothing
    servers = tomllib.loads(done.stdout)["plugins"]["mcp"]["servers"]
    assert servers["pg"]["args"] == ["mcp-pg", f"{tmp_path.resolve()}/data"]
    assert servers["pg"]["env"] == {"PGPASSWORD": "${PG_PASSWORD}", "PGUSER": "${USER}"}
    assert servers["web"] == {"url": "http://127.0.0.1:9000/mcp"}
    assert "${input:pg-password} is read from the environment as ${PG_PASSWORD}" in done.stderr


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "claude.json: not JSON"),
        ('{"tools": []}', "no 'mcpServers' (Claude, Cursor) or 'servers' (VS Code)"),
    ],
)
def test_a_file_that_is_not_an_mcp_json_is_named(tmp_path, content, says):
    (tmp_path / "claude.json").write_text(content)
    done = ph("mcp", "import", "claude.json", cwd=tmp_path)
    assert done.returncode == 3 and says in done.stderr
    assert not (tmp_path / "pilothouse.toml").exists()


def test_a_broken_target_is_left_as_it_was(tmp_path):
    (tmp_path / "claude.json").write_text(json.dumps(CLAUDE))
    broken = "[plugins.mcp\nx = 1\n"
    (tmp_path / "pilothouse.toml").write_text(broken)
    done = ph("mcp", "import", "claude.json", cwd=tmp_path)
    assert done.returncode == 3 and "pilothouse.toml" in done.stderr
    assert (tmp_path / "pilothouse.toml").read_text() == broken


def test_list_says_which_servers_start_and_what_needs_approval(tmp_path):
    from mcp_server import Inventory, serve

    with serve(Inventory()) as served:
        (tmp_path / "pilothouse.toml").write_text(
            f'[plugins.mcp.servers.inv]\nurl = "{served.url}"\nexclude = ["slow"]\n'
            "[plugins.mcp.servers.broken]\n"
            f"command = {json.dumps(sys.executable)}\n"
            'args = ["-c", "import sys; sys.exit(\'no such database: acme\')"]\n'
        )
        done = ph("mcp", "list", cwd=tmp_path)
    assert done.returncode == 1  # one server does not start
    lines = done.stdout.splitlines()
    assert any(ln.startswith("inv  http " + served.url) and "ready" in ln for ln in lines)
    tools = {ln.split()[0]: ln for ln in lines if ln.startswith("  ")}
    assert "read-only" in tools["lookup"] and "needs approval" not in tools["lookup"]
    assert "needs approval" in tools["delete_item"]
    assert "not offered (settings)" in tools["slow"]
    (broken,) = [ln for ln in lines if ln.startswith("broken")]
    assert "failed: cannot start MCP server 'broken'" in broken
    assert "no such database: acme" in broken  # the server's own words
    assert done.stderr == ""


def test_list_with_no_servers_says_how_to_add_one(tmp_path):
    done = ph("mcp", "list", cwd=tmp_path)
    assert done.returncode == 0 and "pilothouse mcp import" in done.stdout
    unknown = ph("mcp", "list", "git", cwd=tmp_path)
    assert unknown.returncode == 3 and "no MCP server named 'git'" in unknown.stderr
