"""Record and replay: re-run a logged run fully offline from its own event log.

Every model call's request and response are in the log (``model_call``
events; replay keys each reply by :func:`~pilothouse.model.request_hash` of
the request its event rebuilds), and so is every tool result. ``replay`` runs
the run's crew again on the run's input with every model call served from that
recording and every tool result too (a call that failed fails again), every
escalation decided as it was (``by`` says ``replay of ...``), and the facts about
the run's subject it recalled then; facts the replay keeps go to
``replay:<subject>``, never to the subject's memory. Then it reports the first
step where the replay differs. A recorded run is therefore also a deterministic fixture for
testing changes to a crew.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from ..engine.runstate import RunResult
from ..errors import ModelError, NotFound, ToolError
from ..events import BaseEvent, ModelCalled
from ..hookspecs import hookimpl
from ..model import Model, ModelProvider, ModelRequest, ModelResponse, request_hash
from ..runtime import Runtime
from ..settings import Settings, load_settings
from ..store.base import MemoryItem
from ..store.open import open_store
from ..tools import canonical_json


class ReplayDiverged(ModelError):
    """The replayed run asked a model something the recording does not hold."""

    kind = "replay"


@dataclass
class Recording:
    """The model replies and tool results of one logged run, served in order."""

    run_id: str
    #: by request: the replies, or the error a failed call ended with
    replies: dict[str, deque[ModelResponse | str]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    tools: dict[tuple[str, str], deque[tuple[str | None, str | None]]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    #: by (step, kind, reason) of the escalation: (decision, by, note, text)
    decisions: dict[tuple[str, str, str], deque[tuple[str, str, str, str | None]]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    served: int = 0
    #: the facts about the run's subject it recalled when it started
    memory: list[MemoryItem] = field(default_factory=list)
    #: the run had no model override: its personas fell back to their next model
    fallbacks: bool = True

    @classmethod
    def from_events(cls, run_id: str, events: list[BaseEvent]) -> Recording:
        """Collect what the run's model calls answered and its tools returned."""
        recording = cls(run_id)
        raised: dict[str, tuple[str, str, str]] = {}
        for e in events:
            if e.type == "escalation_raised":
                raised[e.escalation_id] = (e.step_id or "", e.kind, e.reason)  # type: ignore[attr-defined]
            elif e.type == "escalation_decided" and e.escalation_id in raised:  # type: ignore[attr-defined]
                d: Any = e
                recording.decisions[raised[d.escalation_id]].append(
                    (d.decision, d.by, d.note, d.text)
                )
            if isinstance(e, ModelCalled) and e.error is not None:
                recording.replies[request_hash(e.request())].append(e.error)
            elif isinstance(e, ModelCalled):
                recording.replies[request_hash(e.request())].append(
                    ModelResponse(
                        text=e.text,
                        tool_calls=e.tool_calls,
                        usage=e.usage,
                        cost_usd=e.cost_usd,
                        request_id=e.request_id,
                        finish_reason=e.finish_reason,
                    )
                )
            elif e.type == "tool_call":
                key = (e.tool, canonical_json(e.arguments))  # type: ignore[attr-defined]
                recording.tools[key].append((e.result, e.error))  # type: ignore[attr-defined]
        return recording

    def reply(self, request: ModelRequest) -> ModelResponse:
        """The recorded reply to this request; the recorded failure raised again as a
        :class:`ModelError`; :class:`ReplayDiverged` if the run never sent it."""
        queue = self.replies.get(request_hash(request))
        if not queue:
            raise ReplayDiverged(
                f"the replay sent a request that run {self.run_id} never sent"
                f" (last message: {_snippet(request)})"
            )
        self.served += 1
        reply = queue.popleft()
        if isinstance(reply, str):  # logged as "ErrorType: message"
            kind, _, message = reply.partition(": ")
            raise ModelError(message if kind.isidentifier() and message else reply)
        return reply

    def decision(
        self, step_id: str, kind: str, reason: str
    ) -> tuple[str, str, str, str | None] | None:
        """The decision a person (or the timeout policy) made on this escalation in the
        recording; None when the recording holds none (the replay then waits)."""
        queue = self.decisions.get((step_id, kind, reason))
        return queue.popleft() if queue else None

    def tool_result(self, name: str, canonical_arguments: str) -> str:
        """The recorded result of this tool call (a recorded error is raised again)."""
        queue = self.tools.get((name, canonical_arguments))
        if not queue:
            raise ToolError(f"replay: run {self.run_id} never called {name}({canonical_arguments})")
        result, error = queue.popleft()
        if error is not None:
            raise ToolError(error)
        return result or ""


class ReplayModel(Model):
    """Answers from a :class:`Recording`; never leaves the machine."""

    provider = "replay"
    offline = True

    def __init__(self, recording: Recording) -> None:
        self.name = recording.run_id
        self.recording = recording

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """The recorded reply, or :class:`ReplayDiverged`."""
        return self.recording.reply(request).model_copy(deep=True)


class ReplayProvider(ModelProvider):
    """``replay:<run id>``."""

    name = "replay"

    def __init__(self, recording: Recording) -> None:
        self.recording = recording

    def model(self, name: str) -> Model:
        """The model serving the recording of run ``name``."""
        if name != self.recording.run_id:
            raise NotFound(f"no recording of run {name!r} is loaded")
        return ReplayModel(self.recording)


class _ReplayPlugin:
    __name__ = "replay"

    def __init__(self, recording: Recording) -> None:
        self.recording = recording

    @hookimpl
    def register_models(self, register: Any) -> None:
        register(ReplayProvider(self.recording))


@dataclass
class ReplayReport:
    """How a replay compares with the run it replays."""

    original: str
    replay: RunResult
    steps: int
    served: int
    diverged_at: str | None = None
    reason: str = ""

    @property
    def identical(self) -> bool:
        """True when every step gave the same output as in the recording."""
        return self.diverged_at is None and self.reason == ""


async def replay(
    run_id: str,
    settings: Settings | None = None,
    *,
    plugins: list[Any] = (),  # type: ignore[assignment]
) -> ReplayReport:
    """Replay a logged run offline (a new run in the log); see the module docstring.

    :param plugins: extra plugin objects, as for :class:`~pilothouse.Runtime`
    """
    settings = settings or load_settings()
    store = open_store(settings)
    try:
        summary = store.get_run(run_id)
        events = store.events(summary.id)
        # a worker's run logged run_queued first
        started: Any = next((e for e in events if e.type == "run_started"), events[0])
        known = store.memories_by_id(getattr(started, "recalled", []))
    finally:
        store.close()
    recording = Recording.from_events(summary.id, events)
    recording.fallbacks = getattr(started, "model_override", None) is None
    async with Runtime(settings, plugins=[*plugins, _ReplayPlugin(recording)]) as rt:
        recording.memory = known  # the run knew what it knew then
        rt.engine.replaying = recording
        crew = rt.crew(started.crew)
        result = await rt.run(crew, started.input, model=f"replay:{summary.id}",
                              subject=started.subject)  # fmt: skip
        replayed = rt.store.events(result.run_id) if rt.store is not None else []
    return compare(summary.id, events, result, replayed, recording.served)


def compare(
    original_id: str,
    original: list[BaseEvent],
    result: RunResult,
    replayed: list[BaseEvent],
    served: int,
) -> ReplayReport:
    """Find the first step (in the original order) whose output differs."""
    before = [(e.step_id, e.output) for e in original if e.type == "step_finished"]  # type: ignore[attr-defined]
    after = {e.step_id: e.output for e in replayed if e.type == "step_finished"}  # type: ignore[attr-defined]
    report = ReplayReport(original=original_id, replay=result, steps=len(before), served=served)
    for step_id, output in before:
        if step_id not in after:
            report.diverged_at = step_id
            report.reason = result.error or "the replay never reached this step"
            return report
        if after[step_id] != output:
            report.diverged_at = step_id
            report.reason = "the step's output differs from the recording"
            return report
    if len(after) != len(before):
        extra = next(s for s in after if s not in dict(before))
        report.diverged_at, report.reason = extra, "the replay ran a step the recording lacks"
    elif not result.ok and result.error != _failure(original):
        report.reason = result.error or "the replay failed"
    return report


def _failure(events: list[BaseEvent]) -> str | None:
    """Why the run failed, as its result says it (None if it did not)."""
    failed = next((e for e in events if e.type == "run_failed"), None)
    return failed.message if failed is not None else None  # type: ignore[attr-defined]


def _snippet(request: ModelRequest) -> str:
    last = request.messages[-1].content if request.messages else ""
    flat = " ".join((last or "").split())
    return repr(flat[:80] + ("…" if len(flat) > 80 else ""))
