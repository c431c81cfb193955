"""The documentation site's reference pages, generated from the code so they cannot drift.

``hooks_reference`` reads :mod:`pilothouse.hookspecs`, ``cli_reference`` the
click commands, ``settings_reference`` the :class:`~pilothouse.Settings` fields and
``api_reference`` the public API (``pilothouse.__all__``). The project's
``mkdocs.yml`` loads this file as an mkdocs hook: a page holding
``<!-- reference:hooks -->`` (or ``cli``, ``settings``, ``api``) gets the generated
text in its place.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import click

from pilothouse import hookspecs
from pilothouse.cli import cli
from pilothouse.settings import ENV_PREFIX, Settings

MARKER = re.compile(r"<!-- reference:(\w+) -->")


def hooks_reference() -> str:
    """Every hook with its signature and docstring, in the order of ``hookspecs.py``."""
    out = [inspect.cleandoc(hookspecs.__doc__ or ""), ""]
    functions = [f for _, f in inspect.getmembers(hookspecs, inspect.isfunction)
                 if hasattr(f, f"{hookspecs.PROJECT}_spec")]  # fmt: skip
    functions.sort(key=lambda f: f.__code__.co_firstlineno)
    for f in functions:
        params = ", ".join(inspect.signature(f).parameters)
        out += [f"## `{f.__name__}({params})`", "", inspect.cleandoc(f.__doc__ or ""), ""]
    return "\n".join(out)


def cli_reference() -> str:
    """Every command and option of ``pilothouse``, with its help."""
    out: list[str] = []

    def walk(command: click.Command, path: list[str]) -> None:
        name = " ".join(path)
        ctx = click.Context(command, info_name=name)
        if path != ["pilothouse"]:
            out.extend([f"## `{name}`", ""])
        out.extend([inspect.cleandoc(command.help or ""), "", "```text",
                    command.get_usage(ctx), "```", ""])  # fmt: skip
        rows = []
        for param in command.get_params(ctx):
            record = param.get_help_record(ctx)
            if record:
                rows.append(f"| `{record[0]}` | {record[1].replace('|', '&#124;')} |")
        if rows:
            out.extend(["| option | meaning |", "|---|---|", *rows, ""])
        if isinstance(command, click.Group):
            for sub in sorted(command.list_commands(ctx)):
                walk(command.get_command(ctx, sub), [*path, sub])  # type: ignore[arg-type]

    walk(cli, ["pilothouse"])
    return "\n".join(out)


def settings_reference() -> str:
    """Every setting: environment variable, default and meaning."""
    rows = ["| setting | environment | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default: Any = field.get_default(call_default_factory=True)
        shown = "" if default in ({}, [], None) else f"`{default}`"
        rows.append(f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | {shown} |"
                    f" {field.description or ''} |")  # fmt: skip
    return "\n".join(rows)


def api_reference() -> str:
    """Every name of the public API (``pilothouse.__all__``), grouped by kind, with its
    signature and the first paragraph of its docstring."""
    import pilothouse

    groups: dict[str, list[str]] = {"Classes": [], "Functions": [], "Constants": []}
    for name in sorted(pilothouse.__all__, key=str.lower):
        obj = getattr(pilothouse, name)
        doc = inspect.getdoc(obj) if inspect.isclass(obj) or callable(obj) else None
        summary = (doc or "").split("\n\n")[0].replace("\n", " ")
        if inspect.isclass(obj):
            kind, title = "Classes", f"`{name}`"
        elif callable(obj):
            try:
                signature = str(inspect.signature(obj))
            except (TypeError, ValueError):
                signature = "(...)"
            kind, title = "Functions", f"`{name}{signature}`"
        else:
            kind, title = "Constants", f"`{name}`"
            summary = f"`{obj!r}`" if len(repr(obj)) < 120 else f"a {type(obj).__name__}"
        groups[kind].append(f"- {title}: {summary}")
    out = [
        "Everything a plugin implements, receives or needs, importable from `pilothouse`"
        " itself: `from pilothouse import Guardrail, Verdict, Span`. Names not listed here"
        " are not part of the contract and may change; the bundled plugins use these only"
        " (a test holds them to it).",
        "",
    ]
    for kind, items in groups.items():
        out += [f"## {kind}", "", *items, ""]
    return "\n".join(out)


GENERATORS = {
    "hooks": hooks_reference,
    "cli": cli_reference,
    "settings": settings_reference,
    "api": api_reference,
}


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs hook: put the generated reference where a page holds its marker."""
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)
