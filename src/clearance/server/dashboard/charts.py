"""Small SVG charts drawn on the server (no script, no library): stacked bars and a calibration
plot. Colours come from CSS classes, so dark mode applies; each mark has a <title>, and every
chart is shown beside a table of the same numbers."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

__all__ = ["calibration_plot", "stacked_bars"]


def stacked_bars(labels: Sequence[str], series: dict[str, Sequence[int]], *, title: str, width: int = 720,
                 height: int = 200) -> Markup:  # fmt: skip
    """One bar per label, stacked by series (CSS class ``bar-<series name>``)."""
    n = len(labels)
    pad_left, pad_bottom, pad_top = 36, 22, 8
    totals = [sum(values[i] for values in series.values()) for i in range(n)]
    top = max(totals, default=0) or 1
    plot_h = height - pad_bottom - pad_top
    slot = (width - pad_left) / max(n, 1)
    bar = max(slot * 0.7, 1.0)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<title>{escape(title)}</title>',
             f'<line class="axis" x1="{pad_left}" y1="{height - pad_bottom}" x2="{width}" y2="{height - pad_bottom}"/>',
             f'<text class="tick" x="{pad_left - 4}" y="{pad_top + 10}" text-anchor="end">{top}</text>',
             f'<text class="tick" x="{pad_left - 4}" y="{height - pad_bottom}" text-anchor="end">0</text>']  # fmt: skip
    for i, label in enumerate(labels):
        x = pad_left + i * slot + (slot - bar) / 2
        y = float(height - pad_bottom)
        for name, values in series.items():
            h = values[i] / top * plot_h
            if h > 0:
                y -= h
                parts.append(f'<rect class="bar-{escape(name)}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}">'
                             f'<title>{escape(label)}: {values[i]} {escape(name)}</title></rect>')  # fmt: skip
        if n <= 12 or i % max(n // 8, 1) == 0:
            parts.append(f'<text class="tick" x="{x + bar / 2:.1f}" y="{height - 6}" text-anchor="middle">{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def calibration_plot(rows: Sequence[dict[str, float]], *, size: int = 260) -> Markup:
    """Mean predicted risk (x) against the observed bad-outcome rate (y) per risk bin; the
    diagonal is perfect calibration, and a point's area follows how many calls it holds."""
    pad = 30
    span = size - 2 * pad
    biggest = max((r["n"] for r in rows), default=1) or 1
    parts = [f'<svg class="chart square" viewBox="0 0 {size} {size}" role="img" aria-label="Calibration: predicted risk against '
             f'observed bad-outcome rate"><title>Calibration</title>',
             f'<rect class="frame" x="{pad}" y="{pad}" width="{span}" height="{span}"/>',
             f'<line class="diagonal" x1="{pad}" y1="{size - pad}" x2="{size - pad}" y2="{pad}"/>',
             f'<text class="tick" x="{size / 2}" y="{size - 6}" text-anchor="middle">predicted risk</text>',
             f'<text class="tick" x="10" y="{size / 2}" transform="rotate(-90 10 {size / 2})" text-anchor="middle">observed bad rate</text>']  # fmt: skip
    for r in rows:
        cx, cy = pad + r["mean_risk"] * span, size - pad - r["observed_bad_rate"] * span
        radius = 3 + 9 * (r["n"] / biggest) ** 0.5
        parts.append(f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="{radius:.1f}"><title>risk {r["mean_risk"]:.2f}: '
                     f'observed {r["observed_bad_rate"]:.2f} over {int(r["n"])} calls</title></circle>')  # fmt: skip
    parts.append("</svg>")
    return Markup("".join(parts))
