"""How the offline model reads its context window and writes a reply."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pilothouse import HANDOFF_PREFIX, Message, ModelRequest, ToolCall, ToolSpec

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_PASSAGE = re.compile(r'<passage id="([^"]*)" source="([^"]*)">\n(.*?)\n</passage>', re.S)
#: one remembered fact in the quoted memory block: ``- [channel] fact``
_MEMORY = re.compile(r"<memory>\n(.*?)\n</memory>", re.S)
_FACT = re.compile(r"^- \[[^\]]*\] (.+)$", re.M)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_STOP = frozenset(
    """
    a an and are as at be by for from has have in is it its of on or our that the their this
    to was we were will with you your what which who how into about than then them they task
    output do does not can should must
    """.split()
)


def words(text: str) -> set[str]:
    """Content words, crudely stemmed, for overlap scores."""
    return {w[:6] for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


#: the words every handoff tool's description starts with ("Hand the work to ...")
_HANDOFF_WORDS = words("hand the work")


def _last_user(messages: list[Message]) -> tuple[int, str]:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            return i, messages[i].content or ""
    return -1, ""


def choose_tool_call(request: ModelRequest) -> ToolCall | None:
    """Call a tool when one fits the latest request and none has answered yet."""
    index, text = _last_user(request.messages)
    if not request.tools or any(m.role == "tool" for m in request.messages[index + 1 :]):
        return None
    lowered = text.lower()
    # a model does not hand work to a persona whose output it already has
    tools = [spec for spec in request.tools if not _reported(spec, text)]
    for spec in tools:
        target = _target(spec)
        if target is not None:
            # a '.' or ' ' of the persona's name is '_' in its tool's name
            named = re.escape(target.lower()).replace("_", "[._ -]")
            if re.search(rf"(?<![a-z0-9_]){named}(?![a-z0-9_])", lowered):
                return _call(spec, {"message": _the_ask(text)})
    wanted = words(text)
    system = request.messages[0].content or "" if request.messages else ""
    handoff = _best_handoff(tools, wanted, system)
    if handoff is not None:
        return _call(handoff, {"message": _the_ask(text)})
    best, best_score = None, 0
    for spec in request.tools:
        if _target(spec) is not None:
            continue
        if spec.name in system.split("\n\n", 1)[0]:  # the instructions ask for this tool
            return _call(spec, _arguments(spec, text))
        name_hits = len(words(spec.name.replace("_", " ")) & wanted)
        score = 2 * name_hits + len(words(spec.description) & wanted)
        if name_hits and score > best_score:
            best, best_score = spec, score
    if best is None:
        return None
    return _call(best, _arguments(best, text))


def _the_ask(text: str) -> str:
    """What to hand on of a request: its task, without the reports that follow it."""
    return text.split("\n\n", 1)[0].removeprefix("Task: ")


def _target(spec: ToolSpec) -> str | None:
    """Who a handoff tool hands the work to (its name's tail), or None for a tool."""
    return spec.name.removeprefix(HANDOFF_PREFIX) if spec.name.startswith(HANDOFF_PREFIX) else None


def _reported(spec: ToolSpec, text: str) -> bool:
    """The handoff tool of a persona whose output is in ``text`` already (a previous
    step's, or a report to a supervisor)."""
    target = _target(spec)
    if target is None:
        return False
    name = re.escape(target)
    return re.search(rf"^(## {name} \(asked:|Output of {name}:)", text, re.M) is not None


def _best_handoff(tools: list[ToolSpec], wanted: set[str], system: str) -> ToolSpec | None:
    """The persona whose description shares the most words with the request, when it
    shares more than the model's own instructions do (else the model answers itself:
    a specialist handed a request does not pass it on again)."""
    own = len(words(system.split("\n\n", 1)[0]) & wanted)
    best, best_score = None, own
    for spec in tools:
        if _target(spec) is not None:
            about = words(spec.description) - _HANDOFF_WORDS
            score = len(about & wanted)
            if score > best_score:
                best, best_score = spec, score
    return best


def _call(spec: ToolSpec, arguments: dict[str, Any]) -> ToolCall:
    raw = json.dumps(arguments, sort_keys=True)
    digest = hashlib.sha1(f"{spec.name}{raw}".encode()).hexdigest()[:8]
    return ToolCall(id=f"call_{digest}", name=spec.name, arguments=raw)


def _arguments(spec: ToolSpec, text: str) -> dict[str, Any]:
    props: dict[str, Any] = spec.parameters.get("properties", {})
    required = spec.parameters.get("required", list(props))
    numbers = _NUMBER.findall(text)
    task = text.split("\n\n", 1)[0].removeprefix("Task: ").strip()
    args: dict[str, Any] = {}
    for name in required:
        schema = props.get(name, {})
        kind = schema.get("type")
        if "enum" in schema:
            args[name] = schema["enum"][0]
        elif kind == "integer":
            args[name] = int(float(numbers[0])) if numbers else schema.get("default", 1)
        elif kind == "number":
            args[name] = float(numbers[0]) if numbers else schema.get("default", 1.0)
        elif kind == "boolean":
            args[name] = False
        elif kind == "array":
            args[name] = []
        elif kind == "object":
            args[name] = {}
        else:
            args[name] = task[:200]
    return args


def _role(system: str) -> str:
    match = re.search(
        r"\byou are (?:the |an? )?([a-z][a-z -]{1,30}?)(?:[.,:;]|\bwho\b|$)", system, re.I
    )
    return match.group(1).strip().capitalize() if match else "Assistant"


def _evidence(request: ModelRequest) -> list[tuple[str, str]]:
    """(sentence, citation) pairs from passages, facts remembered about the run's
    subject, tool results and the previous output."""
    found: list[tuple[str, str]] = []
    system = request.messages[0].content or "" if request.messages else ""
    for pid, _source, body in _PASSAGE.findall(system):
        found += [(s, f"[{pid}]") for s in _sentences(body)]
    for block in _MEMORY.findall(system):
        found += [(fact.strip(), "(memory)") for fact in _FACT.findall(block)]
    for m in request.messages:
        if m.role == "tool" and m.content and not m.content.startswith("error:"):
            found += [(s, "(tool)") for s in _sentences(m.content)]
    _, user = _last_user(request.messages)
    if "\n\nOutput of " in user:
        previous = user.split("\n\nOutput of ", 1)[1].split("\n", 1)[-1]
        for line in previous.splitlines():
            if line.startswith("## "):  # a section's header: whose output follows
                continue
            line = line.strip().lstrip("-*# ").strip()
            if line and not line.endswith(":") and " notes on: " not in line:
                found.append((line, ""))
    return found


def _sentences(text: str) -> list[str]:
    return [s.strip().lstrip("-*# ").strip() for s in _SENTENCE.split(text) if len(s.strip()) > 12]


def answer(request: ModelRequest, *, points: int = 5) -> str:
    """A reply made of the evidence that best matches the task and the instructions."""
    system = request.messages[0].content or "" if request.messages else ""
    _, user = _last_user(request.messages)
    task = user.split("\n\n", 1)[0].removeprefix("Task: ").strip()
    focus = words(task) | words(system.split("\n\n", 1)[0])
    evidence = _evidence(request)
    seen: set[str] = set()
    ranked: list[tuple[int, int, str, str]] = []
    for order, (sentence, cite) in enumerate(evidence):
        plain = re.sub(r"\s*(\[[^\]]+\]|\((tool|memory)\))\s*$", "", sentence)
        if plain.lower() in seen:
            continue
        seen.add(plain.lower())
        ranked.append((-len(words(plain) & focus), order, plain, cite))
    chosen = sorted(sorted(ranked)[:points], key=lambda r: r[1])
    if request.response_schema is not None:
        return json.dumps(_structured(request.response_schema, task, [c[2] for c in chosen]))
    role = _role(system)
    lines = [f"{role} notes on: {task}"]
    lines += [f"- {plain} {cite}".rstrip() for _, _, plain, cite in chosen]
    if not chosen:
        lines.append(f"- No reference material was available; working from the task alone: {task}")
    return "\n".join(lines)


def _structured(schema: dict[str, Any], task: str, points: list[str]) -> Any:
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _structured(v, task, points) for k, v in props.items()}
    if kind == "array":
        return points
    if kind in ("number", "integer"):
        return schema.get("default", 0)
    if kind == "boolean":
        return bool(schema.get("default", False))
    if "enum" in schema:
        return schema["enum"][0]
    return points[0] if points else task
