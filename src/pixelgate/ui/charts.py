"""Server-side SVG charts, hand-written: bars and lines over a time axis, with units.

Small on purpose (no chart library, no script): each chart is an ``<svg>`` string built
from escaped text, readable without JavaScript and allowed by the strict CSP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

__all__ = ["Series", "bar_chart", "line_chart"]

WIDTH = 560
HEIGHT = 220
LEFT = 56
RIGHT = 12
TOP = 28
BOTTOM = 40
Y_TICKS = 4
MAX_X_LABELS = 6
#: colour-blind-safe palette (Okabe-Ito)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")


@dataclass(frozen=True)
class Series:
    """One named line: values per time bucket (None: no data in that bucket)."""

    name: str
    values: Sequence[float | None]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def _fmt(value: float, unit: str) -> str:
    text = f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.2g}"
    return f"{text} {unit}".strip() if unit not in ("%",) else f"{text}%"


def _label(at: datetime, time_format: str) -> str:
    return at.strftime(time_format)


def _frame(
    title: str, unit: str, y_max: float, times: Sequence[datetime], time_format: str, x_title: str
) -> list[str]:
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="{LEFT}" y="16" class="chart-title">{escape(title)}</text>',
    ]
    for i in range(Y_TICKS + 1):
        value = y_max * i / Y_TICKS
        y = TOP + plot_h - plot_h * i / Y_TICKS
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{escape(_fmt(value, unit))}</text>"
        )
    n = len(times)
    if n:
        every = max(1, math.ceil(n / MAX_X_LABELS))
        for i in range(0, n, every):
            x = LEFT + plot_w * (i + 0.5) / n
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" class="tick">'
                f"{escape(_label(times[i], time_format))}</text>"
            )
    parts.append(
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
        f'class="axis-title">{escape(x_title)}</text>'
    )
    parts.append(
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}" class="axis"/>'
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" '
        'class="axis"/>'
    )
    return parts


def bar_chart(
    title: str,
    times: Sequence[datetime],
    values: Sequence[float],
    *,
    unit: str,
    time_format: str = "%m-%d",
    x_title: str = "day (UTC)",
) -> Markup:
    """Bars per time bucket, the y axis in ``unit``."""
    y_max = _nice_max(max(values, default=0))
    parts = _frame(title, unit, y_max, times, time_format, x_title)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    n = len(values)
    for i, value in enumerate(values):
        slot = plot_w / n
        h = plot_h * value / y_max
        x = LEFT + slot * i + slot * 0.15
        parts.append(
            f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{h:.1f}" class="bar"><title>{escape(_label(times[i], time_format))}: '
            f"{escape(_fmt(value, unit))}</title></rect>"
        )
    if not any(values):
        parts.append(_empty())
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(
    title: str,
    times: Sequence[datetime],
    series: Sequence[Series],
    *,
    unit: str,
    y_max: float | None = None,
    time_format: str = "%H:%M",
    x_title: str = "time (UTC)",
) -> Markup:
    """One line per series over shared time buckets; gaps where a bucket has no data."""
    seen = [v for s in series for v in s.values if v is not None]
    top = y_max if y_max is not None else _nice_max(max(seen, default=0))
    parts = _frame(title, unit, top, times, time_format, x_title)
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    n = len(times)
    for k, line in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        points: list[str] = []
        for i, value in enumerate(line.values):
            if value is None:
                continue
            x = LEFT + plot_w * (i + 0.5) / max(n, 1)
            y = TOP + plot_h - plot_h * min(value, top) / top
            points.append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"><title>'
                f"{escape(line.name)} {escape(_label(times[i], time_format))}: "
                f"{escape(_fmt(value, unit))}</title></circle>"
            )
        if len(points) > 1:
            parts.append(
                f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" '
                'stroke-width="2"/>'
            )
        parts.append(
            f'<text x="{WIDTH - RIGHT - 4}" y="{TOP + 12 + 14 * k}" text-anchor="end" '
            f'fill="{colour}" class="legend">{escape(line.name)}</text>'
        )
    if not seen:
        parts.append(_empty())
    parts.append("</svg>")
    return Markup("".join(parts))


def _empty() -> str:
    return (
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle" '
        'class="empty">no data in this period</text>'
    )
