"""Structured output: the JSON a persona with an ``output_schema`` must give, checked the
same way however a model server was asked for it.

Servers differ in how they take a schema (OpenAI's ``json_schema`` response format,
``json_object`` with the schema beside it, a forced tool call, or only the
instructions): a provider picks the way (its *output mode*), and the engine checks
what came back with :func:`output_problem`. JSON Schema is checked by ``jsonschema``,
the reference validator, imported on the first check (it is not cheap to import).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

#: the ways a provider can ask a server for structured output, in the order ``auto``
#: tries them (see the OpenAI-compatible provider)
OUTPUT_MODES = ("json_schema", "json_object", "tool", "prompt")

#: a Markdown code fence around a reply (```json ... ```), which prompted models add
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)
#: how much of a validation message an error quotes
_SHOWN = 300


def schema_error(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a valid JSON Schema, or None (for crew validation)."""
    from jsonschema import SchemaError, validators

    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "the top"
        return f"invalid JSON Schema at {where}: {_short(exc.message)}"
    return None


def output_problem(text: str | None, schema: dict[str, Any]) -> str | None:
    """Why ``text`` is not JSON that validates against ``schema``, or None.

    The answer names the first failing place as a JSON path (``$.decision``) and what
    is wrong there, short enough for an error line.
    """
    if not text or not text.strip():
        return "the reply is empty, not JSON"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"the reply is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    from jsonschema.exceptions import best_match

    error = best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(data))
    if error is None:
        return None
    return f"at {error.json_path}: {_short(error.message)}"


def unfenced(text: str | None) -> str | None:
    """``text`` without a Markdown code fence around it (```json ... ```), the way
    models asked for JSON in their instructions often wrap it."""
    if not text:
        return text
    found = _FENCE.match(text)
    return found.group("body").strip() if found else text.strip()


def schema_instructions(schema: dict[str, Any]) -> str:
    """What a prompt says when the schema can only be asked for in words."""
    return (
        "Answer with only a JSON value that matches this JSON Schema: no text before"
        " or after it, no code fence.\nJSON Schema:\n" + json.dumps(schema, ensure_ascii=False)
    )


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    from jsonschema import validators

    schema = json.loads(schema_json)
    return validators.validator_for(schema)(schema)


def _short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= _SHOWN else message[: _SHOWN - 3] + "..."
