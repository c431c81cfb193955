"""Charts as inline SVG: no script, no CDN, readable offline and in an archive."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

PALETTE = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#8e24aa",
    "active": "#1565c0",
}


def stacked_bars(
    title: str,
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    *,
    width: int = 640,
    height: int = 220,
    fmt: Callable[[float], str] | None = None,
) -> str:
    """Vertical bars, one per label, stacked by series (e.g. runs per day by status);
    nothing when there is nothing above zero to draw (an empty chart says nothing)."""
    fmt = fmt or number
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    if not labels or max(totals, default=0) <= 0:
        return ""
    top = max(totals)
    left, bottom, pad = 48, 36, 8
    plot_w, plot_h = width - left - pad, height - bottom - pad
    slot = plot_w / len(labels)
    bar = max(2.0, slot * 0.7)
    parts = [
        f'<svg class="ph-chart" role="img" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{html.escape(title)}</title>',
        f'<text x="{left}" y="{pad + 10}" class="ph-axis">{html.escape(fmt(top))}</text>',
        f'<line x1="{left}" y1="{pad + plot_h}" x2="{width - pad}" y2="{pad + plot_h}" '
        'class="ph-axis-line"/>',
    ]
    for i, label in enumerate(labels):
        x = left + i * slot + (slot - bar) / 2
        y = pad + plot_h
        for name, values in series.items():
            h = plot_h * values[i] / top
            if h <= 0:
                continue
            y -= h
            colour = PALETTE.get(name, "#546e7a")
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{html.escape(label)} {html.escape(name)}: '
                f"{html.escape(fmt(values[i]))}</title></rect>"
            )
        if len(labels) <= 16 or i % max(1, len(labels) // 8) == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - 14}" text-anchor="middle" '
                f'class="ph-axis">{html.escape(label[-5:])}</text>'
            )
    legend_x = left
    for name in series:
        colour = PALETTE.get(name, "#546e7a")
        parts.append(
            f'<rect x="{legend_x}" y="{height - 10}" width="8" height="8" fill="{colour}"/>'
        )
        parts.append(
            f'<text x="{legend_x + 11}" y="{height - 2}" class="ph-axis">{html.escape(name)}</text>'
        )
        legend_x += 14 + 7 * len(name)
    parts.append("</svg>")
    return "".join(parts)


def hbars(
    title: str,
    items: Sequence[tuple[str, float]],
    *,
    fmt: Callable[[float], str] | None = None,
    width: int = 640,
) -> str:
    """Horizontal bars, one per item (e.g. cost per crew); nothing when every value is
    zero."""
    fmt = fmt or number
    if not items or max(v for _, v in items) <= 0:
        return ""
    row, left = 22, 160
    height = row * len(items) + 8
    top = max(v for _, v in items)
    parts = [
        f'<svg class="ph-chart" role="img" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{html.escape(title)}</title>'
    ]
    for i, (label, value) in enumerate(items):
        y = 4 + i * row
        w = (width - left - 90) * value / top
        parts.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" class="ph-axis">'
            f"{html.escape(label[:24])}</text>"
        )
        parts.append(
            f'<rect x="{left}" y="{y + 3}" width="{max(w, 1):.1f}" height="14" fill="#1565c0"/>'
        )
        parts.append(
            f'<text x="{left + max(w, 1) + 6:.1f}" y="{y + 14}" class="ph-axis">'
            f"{html.escape(fmt(value))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def number(value: float) -> str:
    """A count or an amount, as the portal writes it (1,234; 0.5000; 12.50)."""
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.4f}" if value < 1 else f"{value:,.2f}"


def money(value: float) -> str:
    """US dollars, as every table of the portal writes them: ``$0.0123``."""
    return f"${value:,.4f}"
