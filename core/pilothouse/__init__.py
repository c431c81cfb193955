"""pilothouse: a runtime for fleets of LLM agents with human-on-the-loop oversight."""

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
    ToolError,
)
from .guardrails import Guardrail, GuardrailContext, Verdict
from .hookspecs import hookimpl
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
from .retrieval import Passage, Retriever
from .runtime import Runtime, run
from .settings import Settings, load_settings
from .store.base import Escalation, RunStore, RunSummary
from .tools import Tool, tool

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Crew",
    "CrewFileError",
    "DecisionError",
    "Escalation",
    "EscalationRejected",
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
    "StoreError",
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
