"""Crews as data: a TOML file per crew.

A crew file holds the crew's top-level keys (``name``, ``description``,
``on_flag``) and the tables ``[flow]``, ``[limits]`` and ``[personas.NAME]``::

    name = "support"
    [flow]
    type = "sequential"
    steps = ["triage", "writer"]
    [limits]
    max_steps = 8
    [personas.triage]
    instructions = "Sort the request into billing, bug or other."
    model = "offline"

Errors name the file, the line and the key.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .crew import Crew
from .errors import CrewFileError
from .suggest import did_you_mean


def load_crew_file(path: str | Path) -> Crew:
    """Read and validate a crew file; raise :class:`CrewFileError` with file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CrewFileError(str(path), f"cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise CrewFileError(
            str(path), f"invalid TOML: {exc}", line=int(match.group(1)) if match else None
        ) from None
    data.setdefault("name", path.stem)
    try:
        return Crew.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(text, err) for err in exc.errors()]
        problems.sort(key=lambda p: (p[0] is None, p[0] or 0))  # in the file's order
        (line, key, reason), *more = problems
        raise CrewFileError(str(path), reason, line=line, key=key, more=more) from None


def _problem(text: str, err: Any) -> tuple[int | None, str, str]:
    """One validation error as (line, key, reason)."""
    loc = [str(p) for p in err["loc"] if not _is_union_tag(p)]
    reason = err["msg"]
    if err["type"] == "extra_forbidden" and loc:
        reason += did_you_mean(loc[-1], Crew)
    return find_line(text, loc), ".".join(loc), reason


def _is_union_tag(part: object) -> bool:
    # pydantic adds the discriminator value ("sequential") or a type name to locations
    return isinstance(part, str) and part in {
        "sequential",
        "parallel",
        "handoff",
        "supervisor",
        "str",
        "list[str]",
    }


def find_line(text: str, loc: list[str]) -> int | None:
    """Best-effort line number of the key at ``loc`` (e.g. personas.triage.model)."""
    lines = text.splitlines()
    # The longest table header that is a prefix of loc, then the key after it.
    for cut in range(len(loc), 0, -1):
        header = ".".join(loc[:cut])
        pattern = re.compile(rf"^\s*\[\s*{re.escape(header)}\s*\]\s*(#.*)?$")
        for number, line in enumerate(lines, start=1):
            if pattern.match(line):
                rest = loc[cut:]
                key = next((p for p in rest if not p.isdigit()), None)
                if key is None:
                    return number
                found = _key_line(lines, number, key)
                return found or number
    key = loc[0] if loc else None
    if key:
        return _key_line(lines, 0, key)
    return None


def _key_line(lines: list[str], start: int, key: str) -> int | None:
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number in range(start, len(lines)):
        line = lines[number]
        if line.lstrip().startswith("["):
            return None
        if pattern.match(line):
            return number + 1
    return None
