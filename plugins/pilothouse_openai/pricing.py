"""Prices of well-known hosted models, USD per million tokens (input, output).

Providers change prices: the table is a starting point, checked on 2026-11-25
against published list prices where known. Override or extend it with
``[prices."MODEL"]`` in pilothouse.toml. Models missing from both have no
cost (budgets in USD skip them; token budgets still apply).
"""

from __future__ import annotations

from pilothouse import Settings

BUILT_IN: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
}


def price_for(settings: Settings, endpoint: str, model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens: settings first, then the built-in table.

    ``endpoint:model`` beats ``model`` in settings; the built-in table applies to
    the ``openai`` endpoint only, and matches dated names (``gpt-4o-mini-2024-07-18``).
    """
    for key in (f"{endpoint}:{model}", model):
        if key in settings.prices:
            price = settings.prices[key]
            return price.input, price.output
    if endpoint != "openai":
        return None
    for name in sorted(BUILT_IN, key=len, reverse=True):
        if model == name or model.startswith(name + "-"):
            return BUILT_IN[name]
    return None
