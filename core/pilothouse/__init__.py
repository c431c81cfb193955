"""pilothouse: a runtime for fleets of LLM agents with human-on-the-loop oversight.

The names below are the public API. Importing the package loads only the errors and
the plugin marker; each other name loads its module when it is first used (PEP 562),
so a plugin, a script or ``pilothouse --help`` pays for what it uses only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigError,
    CrewFileError,
    DecisionError,
    EscalationRejected,
    GuardrailBlocked,
    LimitExceeded,
    LoopDetected,
    ModelError,
    NotFound,
    PilothouseError,
    PluginError,
    StoreError,
    StoreUnavailable,
    ToolError,
)
from .hookspecs import hookimpl

if TYPE_CHECKING:
    from .blocking import run_blocking
    from .crew import (
        Crew,
        GuardrailNames,
        Handoff,
        Limits,
        Parallel,
        Persona,
        Sequential,
        Supervisor,
    )
    from .crewfile import load_crew_file
    from .engine.runstate import RunResult
    from .guardrails import Guardrail, GuardrailContext, Span, Verdict
    from .knowledge.memory import remember
    from .model import (
        Message,
        Model,
        ModelProvider,
        ModelRequest,
        ModelResponse,
        ToolCall,
        ToolSpec,
        Usage,
        estimate_tokens,
    )
    from .observers import EventObserver
    from .retrieval import Passage, Retriever
    from .runtime import Runtime, run
    from .settings import Settings, load_settings
    from .store.base import Escalation, RunStore, RunSummary
    from .tools import Tool, tool

__version__ = "0.1.0"

#: where each name that loads on first use lives
_LAZY: dict[str, str] = {
    "Crew": ".crew",
    "Escalation": ".store.base",
    "EventObserver": ".observers",
    "Guardrail": ".guardrails",
    "GuardrailContext": ".guardrails",
    "GuardrailNames": ".crew",
    "Handoff": ".crew",
    "Limits": ".crew",
    "Message": ".model",
    "Model": ".model",
    "ModelProvider": ".model",
    "ModelRequest": ".model",
    "ModelResponse": ".model",
    "Parallel": ".crew",
    "Passage": ".retrieval",
    "Persona": ".crew",
    "Retriever": ".retrieval",
    "RunResult": ".engine.runstate",
    "RunStore": ".store.base",
    "RunSummary": ".store.base",
    "Runtime": ".runtime",
    "Sequential": ".crew",
    "Settings": ".settings",
    "Span": ".guardrails",
    "Supervisor": ".crew",
    "Tool": ".tools",
    "ToolCall": ".model",
    "ToolSpec": ".model",
    "Usage": ".model",
    "Verdict": ".guardrails",
    "estimate_tokens": ".model",
    "load_crew_file": ".crewfile",
    "load_settings": ".settings",
    "remember": ".knowledge.memory",
    "run": ".runtime",
    "run_blocking": ".blocking",
    "tool": ".tools",
}


def __getattr__(name: str) -> Any:
    """Load a public name's module the first time the name is used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next use is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
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
    "remember",
    "run",
    "run_blocking",
    "tool",
]
