"""The adversarial suite against the demo crew (guarded) and an unguarded crew."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pilothouse.adversarial import load_payloads

pytestmark = pytest.mark.slow

UNGUARDED = """
[flow]
steps = ["reader"]
[personas.reader]
instructions = "You are the reader."
retrievers = ["demo_corpus"]
"""


def _audit(cwd, crew):
    command = [sys.executable, "-m", "pilothouse", "audit", "adversarial", crew, "--json"]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    return done.returncode, json.loads(done.stdout)


def test_the_bundled_payloads_cover_every_category():
    categories = {p.category for p in load_payloads()}
    assert categories == {"prompt-injection", "jailbreak", "data-exfiltration", "tool-misuse"}


def test_the_demo_crew_catches_every_payload_both_ways(tmp_path):
    code, report = _audit(tmp_path, "marketing")
    outcomes = report["outcomes"]
    assert code == 0 and len(outcomes) == 2 * len(load_payloads())
    assert all(o["caught"] and o["by"] == ["prompt_injection"] for o in outcomes)
    assert {o["mode"] for o in outcomes} == {"direct", "hidden"}


def test_an_unguarded_crew_lets_them_through_and_the_audit_says_so(tmp_path):
    (tmp_path / "crews").mkdir()
    (tmp_path / "crews" / "open.toml").write_text(UNGUARDED)
    code, report = _audit(tmp_path, "open")
    assert code == 1
    assert not any(o["caught"] for o in report["outcomes"])
    assert list((tmp_path / ".pilothouse" / "audits").glob("adversarial-open-*.json"))
