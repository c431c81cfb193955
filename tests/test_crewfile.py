"""Crew files: valid ones load, invalid ones name the file, line, key and reason."""

from __future__ import annotations

import textwrap

import pytest

from pilothouse import CrewFileError, Handoff, load_crew_file

GOOD = """\
description = "Support desk"

[flow]
type = "handoff"
start = "triage"

[limits]
max_steps = 6

[personas.triage]
instructions = "Sort requests."
handoffs = ["billing"]

[personas.billing]
instructions = "Billing."
model = "offline:support"
"""


def _write(tmp_path, text, name="crew.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_valid_file_loads_and_takes_its_name_from_the_file(tmp_path):
    crew = load_crew_file(_write(tmp_path, GOOD, "support.toml"))
    assert crew.name == "support" and isinstance(crew.flow, Handoff)
    assert crew.limits.max_steps == 6 and crew.limits.max_handoffs == 10
    assert crew.personas["billing"].model == "offline:support"
    assert crew.persona_names() == ["triage", "billing"]


@pytest.mark.parametrize(
    ("text", "line", "key", "reason"),
    [
        (GOOD.replace("max_steps = 6", "max_steps = -1"), 8, "limits.max_steps", "greater than 0"),
        (
            GOOD.replace('model = "offline:support"', "modle = 'x'"),
            16,
            "personas.billing.modle",
            "Extra inputs are not permitted; did you mean 'model'?",
        ),
        (
            GOOD.replace("max_steps = 6", "max_stesp = 6"),
            8,
            "limits.max_stesp",
            "Extra inputs are not permitted; did you mean 'max_steps'?",
        ),
        (
            GOOD.replace('type = "handoff"', 'type = "round-robin"'),
            3,
            "flow",
            "does not match any of the expected tags",
        ),
        (GOOD.replace('start = "triage"\n', ""), 3, "flow.start", "Field required"),
        (
            GOOD.replace('handoffs = ["billing"]', 'handoffs = "billing"'),
            12,
            "personas.triage.handoffs",
            "valid list",
        ),
        (GOOD.replace("[limits]", "[limits"), 7, "", "invalid TOML"),
        ('name = "bad name!"\n[flow]\nsteps = ["a"]\n', 1, "name", "should match pattern"),
    ],
)
def test_errors_name_file_line_key_and_reason(tmp_path, text, line, key, reason):
    path = _write(tmp_path, text)
    with pytest.raises(CrewFileError) as info:
        load_crew_file(path)
    err = info.value
    assert (err.path, err.line, err.key) == (str(path), line, key)
    assert reason in err.reason
    assert str(err).startswith(f"{path}:{line}")


def test_a_key_like_no_other_gets_no_suggestion(tmp_path):
    path = _write(tmp_path, GOOD.replace("[limits]", "[limits]\nzzz = 1"))
    with pytest.raises(CrewFileError) as info:
        load_crew_file(path)
    assert info.value.reason == "Extra inputs are not permitted"


def test_missing_file(tmp_path):
    with pytest.raises(CrewFileError, match="cannot read"):
        load_crew_file(tmp_path / "nope.toml")


async def test_a_crew_file_in_crews_runs_by_name(make_runtime, workspace, scripted):
    (workspace / "crews").mkdir()
    _write(
        workspace / "crews",
        '[flow]\nsteps = ["solo"]\n[personas.solo]\ninstructions = "Hi"\n',
        "solo.toml",
    )
    async with make_runtime() as rt:
        assert rt.crews()["solo"] == "crews/solo.toml"
        result = await rt.run("solo", "hello")
    assert result.ok and result.crew == "solo"


async def test_a_crew_file_is_read_again_only_when_it_changes(make_runtime, workspace, scripted):
    # A worker runs the same file thousands of times: each run read it anew, and each
    # new Crew object stayed in the engine's cache of checked crews for ever.
    (workspace / "crews").mkdir()
    crew_file = '[flow]\nsteps = ["solo"]\n[personas.solo]\ninstructions = "{}"\n'
    _write(workspace / "crews", crew_file.format("First."), "solo.toml")
    async with make_runtime() as rt:
        for i in range(50):
            assert (await rt.run("solo", f"hello {i}")).ok
        assert rt.crew("solo") is rt.crew("solo")
        assert len(rt.engine._checked) == 1
        _write(workspace / "crews", crew_file.format("Second, and longer."), "solo.toml")
        assert (await rt.run("solo", "again")).ok
    assert scripted.provider.requests[-1].messages[0].content == "Second, and longer."


async def test_the_engine_forgets_the_oldest_checked_crews(make_runtime, scripted):
    from conftest import crew
    from pilothouse.engine.runs import CHECKED_CREWS

    async with make_runtime() as rt:
        for i in range(CHECKED_CREWS + 20):  # a caller making a new Crew for every run
            fresh = crew({"type": "sequential", "steps": ["a"]}, {"a": {"instructions": "A."}})
            assert (await rt.run(fresh, f"task {i}")).ok
        assert len(rt.engine._checked) == CHECKED_CREWS


def test_every_problem_is_listed_with_its_line(tmp_path):
    """Two mistakes, two lines: each with its line, key and a suggestion, in file order."""
    path = _write(tmp_path, """\
        [flow]
        steps = ["a"]
        [limits]
        max_stepz = 3
        [personas.a]
        instructions = "x"
        modle = "offline"
    """)  # fmt: skip
    with pytest.raises(CrewFileError) as caught:
        load_crew_file(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == 2 and "more problem" not in str(caught.value)
    assert lines[0].startswith(f"{path}:4 [limits.max_stepz]") and "'max_steps'" in lines[0]
    assert lines[1].startswith(f"{path}:7 [personas.a.modle]") and "'model'" in lines[1]
    assert (caught.value.line, caught.value.key) == (4, "limits.max_stepz")


def test_a_missing_crew_file_is_named_as_one(workspace):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    command = [sys.executable, "-m", "pilothouse", "run", "missing.toml", "-i", "x"]
    done = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 3
    assert f"no such file: {workspace / 'missing.toml'}" in done.stderr
    assert "no crew named" not in done.stderr
