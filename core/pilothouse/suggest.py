"""A suggestion for a misspelt key in a crew file or the settings: ``did you mean``."""

from __future__ import annotations

import difflib
import functools
import typing
from collections.abc import Iterable

from pydantic import BaseModel


def did_you_mean(key: str, model: type[BaseModel]) -> str:
    """``; did you mean 'temperature'?`` when ``key`` is close to a key ``model`` takes
    at any depth, else ""."""
    close = closest(key, model_keys(model))
    return f"; did you mean {close!r}?" if close else ""


def did_you_mean_among(key: str, candidates: Iterable[str]) -> str:
    """``; did you mean 'url'?`` when ``key`` is close to one of ``candidates``, else ""."""
    close = closest(key, candidates)
    return f"; did you mean {close!r}?" if close else ""


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``word`` is most likely a misspelling of, if any is close enough."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.75)
    return close[0] if close else None


@functools.cache
def model_keys(model: type[BaseModel]) -> frozenset[str]:
    """Every key ``model`` takes, at any depth (the fields of the models inside it too)."""
    keys: set[str] = set()
    seen: set[type] = set()

    def walk(annotation: object) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in seen:
                return
            seen.add(annotation)
            for name, field in annotation.model_fields.items():
                keys.add(field.alias or name)
                walk(field.annotation)
        for arg in typing.get_args(annotation):
            walk(arg)

    walk(model)
    return frozenset(keys)
