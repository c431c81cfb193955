"""The write path encodes events from their fields (events.entry_of), without building
the pydantic models: every event type, with edge values in every field, must come
out as the typed event's own JSON and validate back into the same event."""

from __future__ import annotations

import enum
import types
import typing
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic import BaseModel

from pilothouse.events import Event, entry_of, event_json, log_entry, parse_event

EVENT_TYPES = [t for t in get_args(get_args(Event)[0])]

#: edge values by type; the first of each is the plain one
STRINGS = ["text", "", 'é漢字🙂\u200b\n\t"\\</script>', "x" * 300_000, "\x00\x1f"]
INTS = [1, 0, -1, 2**53 + 1]
FLOATS = [1.5, 0.0, 1e-300, 1.7976931348623157e308, -2.5]


def _values(annotation: Any, depth: int = 0) -> list[Any]:
    """Values of ``annotation``: plain first, then edges (None for an optional)."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _values(get_args(annotation)[0], depth)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        values = [v for option in options for v in _values(option, depth)]
        return [*values, None] if type(None) in get_args(annotation) else values
    if origin is Literal:
        return list(get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        (item, *_) = get_args(annotation) or (str,)
        inner = _values(item, depth + 1) if depth < 3 else []
        return [[inner[0]], [], inner[:3]] if inner else [[]]
    if origin is dict:
        value = (get_args(annotation) or (str, Any))[1]
        if value is not Any:
            inner = _values(value, depth + 1)
            return [{"k": inner[0]}, {}, {"é": inner[-1], "s\n\x00": inner[len(inner) // 2]}]
        return [{"k": 1}, {}, {"é": [1, {"n": None}], "s": "x" * 1000}]
    if annotation is str:
        return STRINGS
    if annotation is bool:
        return [True, False]
    if annotation is int:
        return INTS
    if annotation is float:
        return FLOATS
    if annotation is Any:
        return [{"any": [1, "two"]}, None, "s"]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return list(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [_instance(annotation, {}, depth + 1)] if depth < 3 else []
    raise AssertionError(f"no sample values for {annotation!r}")


def _instance(model: type[BaseModel], overrides: dict[str, Any], depth: int = 0) -> Any:
    fields = {}
    for name, field in model.model_fields.items():
        if name in overrides:
            fields[name] = overrides[name]
        elif field.is_required():
            fields[name] = _values(field.annotation, depth)[0]
    return model(**fields)


def _variants(event_type: type[BaseModel]):
    """The event with plain values, then with each field's each edge value in turn."""
    yield "plain", {}
    for name, field in event_type.model_fields.items():
        if name in ("type", "run_id", "seq", "ts"):
            continue
        for i, value in enumerate(_values(field.annotation)):
            yield f"{name}#{i}", {name: value}


CASES = [
    pytest.param(event_type, overrides, id=f"{event_type.__name__}-{label}")
    for event_type in EVENT_TYPES
    for label, overrides in _variants(event_type)
]


@pytest.mark.parametrize(("event_type", "overrides"), CASES)
def test_an_event_made_from_its_fields_is_its_typed_json(event_type, overrides):
    event = _instance(event_type, {"run_id": "r-é", "seq": 7, "ts": 1764932400.125, **overrides})
    fields = {name: getattr(event, name) for name in event_type.model_fields
              if name not in ("type", "run_id", "seq", "ts")}  # fmt: skip
    entry = entry_of(event_type, event.run_id, event.seq, event.ts, fields)
    assert entry.data == event_json(event)
    assert parse_event(entry.data) == event  # validates back unchanged
    typed = log_entry(event)
    assert (entry.run_id, entry.seq, entry.type, entry.step_id, entry.ts) == (
        typed.run_id, typed.seq, typed.type, typed.step_id, typed.ts
    )  # fmt: skip
    assert (entry.persona, entry.input_tokens, entry.output_tokens, entry.cost_usd) == (
        typed.persona, typed.input_tokens, typed.output_tokens, typed.cost_usd
    )  # fmt: skip


def test_every_event_type_is_covered():
    assert len(EVENT_TYPES) >= 23 and len(CASES) > 10 * len(EVENT_TYPES)


def test_a_missing_required_field_is_an_error_not_a_null():
    from pilothouse.events import StepStarted

    with pytest.raises(TypeError, match="step_started event without persona"):
        entry_of(StepStarted, "r", 1, 1.0, {"step_id": "1", "input": "x", "model": "m"})
