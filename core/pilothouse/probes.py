"""The data audits are made of: attribute sets for bias probes, hostile payloads
for the adversarial suite. Plugins register both (``register_attribute_sets``,
``register_payloads``); the bundled ones come from the ``probes`` plugin."""

from __future__ import annotations

import tomllib
from importlib.resources.abc import Traversable
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, field_validator

from .errors import ConfigError


class AttributeSet(BaseModel):
    """A protected attribute and its groups, each with the values its placeholders take.

    ``groups["female"] = {"name": ["Anna Berg", ...], "pronoun": ["she"]}``: a case
    text ``"{name} asks..."`` is run once per group with that group's values
    (drawn in turn when a placeholder has several). Every group must fill the same
    placeholders, or the swap would change more than the attribute.
    """

    name: str
    description: str = ""
    groups: dict[str, dict[str, list[str]]] = Field(min_length=2)

    @field_validator("groups")
    @classmethod
    def _same_placeholders(
        cls, groups: dict[str, dict[str, list[str]]]
    ) -> dict[str, dict[str, list[str]]]:
        shapes = {group: sorted(values) for group, values in groups.items()}
        first = next(iter(shapes.values()))
        for group, shape in shapes.items():
            if shape != first:
                raise ValueError(
                    f"group {group!r} fills {shape}, another group fills {first}:"
                    " every group must fill the same placeholders"
                )
            empty = [key for key, values in groups[group].items() if not values]
            if empty:
                raise ValueError(f"group {group!r} has no values for {empty}")
        return groups


class Payload(BaseModel):
    """One hostile text for the adversarial suite."""

    id: str
    category: str
    text: str

    @property
    def name(self) -> str:
        """The payload's id (the name it is registered under)."""
        return self.id


def problem(exc: ValidationError) -> str:
    """The first problem of a validation error, on one line: ``key: reason``."""
    err = exc.errors()[0]
    key = ".".join(str(part) for part in err["loc"])
    reason = err["msg"].removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    return f"{key}: {reason}" + (f" (and {more} more)" if more else "")


def read_toml(path: str | Path | Traversable) -> dict:
    """A TOML file's data; raise :class:`ConfigError` naming the file and the problem."""
    source = path if isinstance(path, Traversable) else Path(path)
    try:
        return tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_payloads(path: str | Path | Traversable) -> list[Payload]:
    """The payloads of a TOML file of ``[[payload]]`` tables (id, category, text)."""
    data = read_toml(path)
    try:
        return [Payload.model_validate(p) for p in data["payload"]]
    except KeyError:
        raise ConfigError(f"{path}: no [[payload]] tables") from None
    except ValidationError as exc:
        raise ConfigError(f"{path}: payload {problem(exc)}") from None


def load_attribute_sets(path: str | Path | Traversable) -> list[AttributeSet]:
    """The attribute sets of a TOML file: ``[set.group] placeholder = [values]``."""
    data = read_toml(path)
    sets = []
    for name, body in data.items():
        body = dict(body)
        description = body.pop("description", "")
        try:
            sets.append(AttributeSet(name=name, description=description, groups=body))
        except ValidationError as exc:
            raise ConfigError(f"{path}: attribute set {name!r}: {problem(exc)}") from None
    return sets
