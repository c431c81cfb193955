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
    from .asgi import bearer_only, token_off_loopback
    from .asking import Answer, ask_person
    from .blocking import run_blocking
    from .crew import (
        HANDOFF_PREFIX,
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
    from .decision import DecisionView, decision_view, plain_text
    from .embedding import Embedder
    from .engine.runstate import RunResult
    from .events import BaseEvent, parse_event
    from .guardrails import Guardrail, GuardrailContext, Span, Verdict
    from .knowledge import KnowledgeError, knowledge_location, open_knowledge
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
        emit_delta,
        estimate_request_tokens,
        estimate_tokens,
        note_remote_task,
        resumed_remote_task,
    )
    from .observers import EventObserver
    from .probes import load_attribute_sets, load_payloads
    from .redact import EMAIL_PATTERN, SECRET_PATTERNS, Redactor
    from .retrieval import Filters, Passage, Retriever
    from .runtime import Runtime, run
    from .settings import Endpoint, Settings, load_settings
    from .store.base import (
        AuditRecord,
        Escalation,
        Listener,
        MemoryItem,
        RunStore,
        RunSummary,
        StoredEvent,
    )
    from .structured import OUTPUT_MODES, output_problem, schema_instructions, unfenced
    from .text import claims, content_words, sentences
    from .tools import Tool, tool
    from .toolsets import Toolset
    from .tracing import span_id, trace_id, traceparent
    from .vectorstores import (
        StoredChunk,
        StoreSettings,
        VectorStore,
        VectorStoreError,
        bare_url,
        chunk_id,
        failures,
        source_segments,
        wanted_segments,
    )

__version__ = "0.1.0"

#: where each name that loads on first use lives
_LAZY: dict[str, str] = {
    "AuditRecord": ".store.base",
    "BaseEvent": ".events",
    "claims": ".text",
    "content_words": ".text",
    "Crew": ".crew",
    "decision_view": ".decision",
    "DecisionView": ".decision",
    "EMAIL_PATTERN": ".redact",
    "Embedder": ".embedding",
    "Filters": ".retrieval",
    "emit_delta": ".model",
    "note_remote_task": ".model",
    "resumed_remote_task": ".model",
    "Endpoint": ".settings",
    "Escalation": ".store.base",
    "estimate_request_tokens": ".model",
    "estimate_tokens": ".model",
    "EventObserver": ".observers",
    "Guardrail": ".guardrails",
    "GuardrailContext": ".guardrails",
    "GuardrailNames": ".crew",
    "Handoff": ".crew",
    "HANDOFF_PREFIX": ".crew",
    "knowledge_location": ".knowledge",
    "KnowledgeError": ".knowledge",
    "Limits": ".crew",
    "Listener": ".store.base",
    "load_attribute_sets": ".probes",
    "load_crew_file": ".crewfile",
    "load_payloads": ".probes",
    "load_settings": ".settings",
    "MemoryItem": ".store.base",
    "Message": ".model",
    "Model": ".model",
    "ModelProvider": ".model",
    "ModelRequest": ".model",
    "ModelResponse": ".model",
    "open_knowledge": ".knowledge",
    "OUTPUT_MODES": ".structured",
    "output_problem": ".structured",
    "Parallel": ".crew",
    "parse_event": ".events",
    "Passage": ".retrieval",
    "Persona": ".crew",
    "plain_text": ".decision",
    "Redactor": ".redact",
    "remember": ".knowledge.memory",
    "Retriever": ".retrieval",
    "run": ".runtime",
    "run_blocking": ".blocking",
    "RunResult": ".engine.runstate",
    "RunStore": ".store.base",
    "RunSummary": ".store.base",
    "Runtime": ".runtime",
    "schema_instructions": ".structured",
    "SECRET_PATTERNS": ".redact",
    "sentences": ".text",
    "Sequential": ".crew",
    "Settings": ".settings",
    "Span": ".guardrails",
    "span_id": ".tracing",
    "StoredEvent": ".store.base",
    "Supervisor": ".crew",
    "Tool": ".tools",
    "tool": ".tools",
    "ToolCall": ".model",
    "ToolSpec": ".model",
    "Toolset": ".toolsets",
    "trace_id": ".tracing",
    "traceparent": ".tracing",
    "unfenced": ".structured",
    "Usage": ".model",
    "StoredChunk": ".vectorstores",
    "StoreSettings": ".vectorstores",
    "bearer_only": ".asgi",
    "token_off_loopback": ".asgi",
    "Answer": ".asking",
    "ask_person": ".asking",
    "bare_url": ".vectorstores",
    "failures": ".vectorstores",
    "VectorStore": ".vectorstores",
    "VectorStoreError": ".vectorstores",
    "chunk_id": ".vectorstores",
    "source_segments": ".vectorstores",
    "wanted_segments": ".vectorstores",
    "Verdict": ".guardrails",
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
    "EMAIL_PATTERN",
    "HANDOFF_PREFIX",
    "OUTPUT_MODES",
    "SECRET_PATTERNS",
    "Answer",
    "AuditRecord",
    "BaseEvent",
    "ConfigError",
    "Crew",
    "CrewFileError",
    "DecisionError",
    "DecisionView",
    "Embedder",
    "Endpoint",
    "Escalation",
    "EscalationRejected",
    "EventObserver",
    "Filters",
    "Guardrail",
    "GuardrailBlocked",
    "GuardrailContext",
    "GuardrailNames",
    "Handoff",
    "KnowledgeError",
    "LimitExceeded",
    "Limits",
    "Listener",
    "LoopDetected",
    "MemoryItem",
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
    "Redactor",
    "Retriever",
    "RunResult",
    "RunStore",
    "RunSummary",
    "Runtime",
    "Sequential",
    "Settings",
    "Span",
    "StoreError",
    "StoreSettings",
    "StoreUnavailable",
    "StoredChunk",
    "StoredEvent",
    "Supervisor",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolSpec",
    "Toolset",
    "Usage",
    "VectorStore",
    "VectorStoreError",
    "Verdict",
    "ask_person",
    "bare_url",
    "bearer_only",
    "chunk_id",
    "claims",
    "content_words",
    "decision_view",
    "emit_delta",
    "estimate_request_tokens",
    "estimate_tokens",
    "failures",
    "hookimpl",
    "knowledge_location",
    "load_attribute_sets",
    "load_crew_file",
    "load_payloads",
    "load_settings",
    "note_remote_task",
    "open_knowledge",
    "output_problem",
    "parse_event",
    "plain_text",
    "remember",
    "resumed_remote_task",
    "run",
    "run_blocking",
    "schema_instructions",
    "sentences",
    "source_segments",
    "span_id",
    "token_off_loopback",
    "tool",
    "trace_id",
    "traceparent",
    "unfenced",
    "wanted_segments",
]
