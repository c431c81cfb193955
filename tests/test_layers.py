"""The layering is a contract: lint-imports checks it, and a wrong-way import fails it."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pilothouse

ROOT = Path(__file__).resolve().parent.parent


def _lint(cwd: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(Path(sys.executable).parent), "LANG": "C.UTF-8", "HOME": str(cwd)}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
               "--config", str(cwd / "pyproject.toml"), "--no-cache"]  # fmt: skip
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_imports_keep_every_contract():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("store/base.py", "from ..engine import runs", "Imports run one way"),
        ("events.py", "from .store import base", "Imports run one way"),
        ("engine/runs.py", "import pilothouse_offline", "never imports a bundled plugin"),
    ],
)
def test_a_wrong_way_import_fails_the_contract(tmp_path, module, line, contract):
    """A copy of the tree with one import that runs the wrong way."""
    for part in ("core", "plugins"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "core" / "pilothouse" / module
    target.write_text(target.read_text() + f"\n{line}  # the wrong way\n")
    done = _lint(tmp_path, f"{tmp_path / 'core'}:{tmp_path / 'plugins'}")
    assert done.returncode != 0, done.stdout[-3000:]
    broken = done.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken and "(l." in broken, done.stdout[-3000:]


def test_a_plugin_reaching_into_the_engine_fails_the_contract(tmp_path):
    for part in ("core", "plugins"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "plugins" / "pilothouse_demo" / "__init__.py"
    target.write_text(target.read_text() + "\nfrom pilothouse.engine import runs  # internal\n")
    done = _lint(tmp_path, f"{tmp_path / 'core'}:{tmp_path / 'plugins'}")
    assert done.returncode != 0
    assert "public API" in done.stdout.split("Broken contracts", 1)[-1]


#: the top-level names before the core was grouped into wings
TOP_LEVEL = [
    "ConfigError",
    "Crew",
    "CrewFileError",
    "DecisionError",
    "Escalation",
    "EscalationRejected",
    "EventObserver",
    "Guardrail",
    "GuardrailBlocked",
    "GuardrailContext",
    "GuardrailNames",
    "Handoff",
    "LimitExceeded",
    "Limits",
    "LoopDetected",
    "Message",
    "Model",
    "ModelError",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "NotFound",
    "Parallel",
    "Passage",
    "Persona",
    "PilothouseError",
    "PluginError",
    "Retriever",
    "RunResult",
    "RunStore",
    "RunSummary",
    "Runtime",
    "Sequential",
    "Settings",
    "Span",
    "StoreError",
    "StoreUnavailable",
    "Supervisor",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolSpec",
    "Usage",
    "Verdict",
    "estimate_tokens",
    "hookimpl",
    "load_crew_file",
    "load_settings",
    "run",
    "run_blocking",
    "tool",
]

#: what plugins and users import from pilothouse, by module: it does not move
PUBLIC = {
    "pilothouse": [*TOP_LEVEL, "remember"],
    "pilothouse.crew": ["Crew", "Persona", "Limits", "HANDOFF_PREFIX"],
    "pilothouse.crewfile": ["load_crew_file"],
    "pilothouse.decision": ["DecisionView", "decision_view", "plain_text", "word_diff"],
    "pilothouse.embedding": ["Embedder"],
    "pilothouse.errors": ["PilothouseError", "ModelError", "PluginError", "ConfigError"],
    "pilothouse.events": ["BaseEvent", "parse_event"],
    "pilothouse.guardrails": ["Guardrail", "GuardrailContext", "Verdict"],
    "pilothouse.hookspecs": ["hookimpl"],
    "pilothouse.knowledge": ["KnowledgeBase", "KnowledgeError", "remember"],
    "pilothouse.model": ["Model", "ModelProvider", "emit_delta", "estimate_request_tokens"],
    "pilothouse.probes": ["load_attribute_sets", "load_payloads"],
    "pilothouse.redact": ["EMAIL_PATTERN", "SECRET_PATTERNS"],
    "pilothouse.retrieval": ["Passage", "Retriever"],
    "pilothouse.settings": ["Endpoint", "Settings", "load_settings"],
    "pilothouse.text": ["claims", "content_words", "sentences"],
    "pilothouse.tools": ["Tool", "tool"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_public_name_imports_from_where_it_did(module):
    imported = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(imported, name)]
    assert not missing, f"{module} lost {missing}"


#: what the plugin boundary added to the top level: everything a bundled plugin
#: imported from a submodule, and the types a plugin receives
ADDED_FOR_PLUGINS = [
    "AuditRecord", "BaseEvent", "DecisionView", "EMAIL_PATTERN", "Embedder", "Endpoint", "Filters",
    "Toolset", "StoredChunk", "StoreSettings", "VectorStore", "VectorStoreError", "chunk_id",
    "source_segments", "wanted_segments", "bare_url", "failures", "bearer_only", "Answer",
    "token_off_loopback", "ask_person", "note_remote_task", "resumed_remote_task",
    "HANDOFF_PREFIX", "KnowledgeError", "Listener", "MemoryItem", "OUTPUT_MODES", "Redactor",
    "SECRET_PATTERNS", "StoredEvent", "claims", "content_words", "decision_view", "emit_delta",
    "estimate_request_tokens", "knowledge_location", "load_attribute_sets", "load_payloads",
    "open_knowledge", "output_problem", "parse_event", "plain_text", "schema_instructions",
    "sentences", "span_id", "trace_id", "traceparent", "unfenced",
]  # fmt: skip


def test_the_top_level_names_are_the_listed_ones():
    assert sorted(pilothouse.__all__) == sorted([*TOP_LEVEL, "remember", *ADDED_FOR_PLUGINS])


def test_every_public_name_has_a_docstring():
    """What a plugin author reads: a class or function says what it is; a constant is
    described where the reference lists it."""
    import inspect

    undocumented = [
        name for name in pilothouse.__all__
        if (inspect.isclass(obj := getattr(pilothouse, name)) or inspect.isfunction(obj))
        and not inspect.getdoc(obj)
    ]  # fmt: skip
    assert undocumented == []


def _plugin_imports(root: Path) -> list[tuple[str, int, str, str]]:
    """(file, line, module, name) of every name the bundled plugins take from pilothouse:
    ``from pilothouse... import name`` and ``pilothouse.name``."""
    import ast

    found = []
    for path in sorted((root / "plugins").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and (node.module == "pilothouse" or node.module.startswith("pilothouse."))
            ):
                found += [(path.name, node.lineno, node.module, a.name) for a in node.names]
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and (node.value.id == "pilothouse")
            ):
                found.append((path.name, node.lineno, "pilothouse", node.attr))
    return found


def test_bundled_plugins_use_only_the_public_api():
    """Every name a bundled plugin takes from pilothouse is in ``pilothouse.__all__``,
    taken from ``pilothouse`` itself: the bundled plugins are the living examples."""
    imports = _plugin_imports(ROOT)
    assert len(imports) > 40  # the scan sees them
    assert _private(imports) == []


def _private(imports: list[tuple[str, int, str, str]]) -> list[str]:
    return [f"{f}:{line} {module}.{name}" for f, line, module, name in imports
            if module != "pilothouse" or name not in pilothouse.__all__]  # fmt: skip


def test_a_plugin_taking_a_private_name_is_caught(tmp_path):
    """The check above fails on a plugin that reaches past the public API."""
    (tmp_path / "plugins" / "pilothouse_bad").mkdir(parents=True)
    (tmp_path / "plugins" / "pilothouse_bad" / "__init__.py").write_text(
        "from pilothouse.engine.runs import Engine\nimport pilothouse\nx = pilothouse._LAZY\n"
        "from pilothouse import Verdict\n"
    )
    assert _private(_plugin_imports(tmp_path)) == [
        "__init__.py:1 pilothouse.engine.runs.Engine",
        "__init__.py:3 pilothouse._LAZY",
    ]
