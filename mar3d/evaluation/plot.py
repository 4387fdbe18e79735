"""Small dependency-free line charts as SVG (token-count curves): readable in any browser and on GitHub."""
from __future__ import annotations

import math
from html import escape

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def line_chart_svg(series: dict[str, dict[float, float]], title: str, x_label: str, y_label: str,
                   log2_x: bool = True, width: int = 420, height: int = 300) -> str:
    """``series``: name -> {x: y}. Returns an SVG document with axes, ticks at the data's x values, a legend."""
    xs = sorted({x for points in series.values() for x in points})
    ys = [y for points in series.values() for y in points.values() if math.isfinite(y)]
    if not xs or not ys:
        raise ValueError("nothing to plot")
    left, right, top, bottom = 60, 20, 40, 50
    fx = (lambda x: math.log2(x)) if log2_x else (lambda x: x)
    x_lo, x_hi = fx(xs[0]), fx(xs[-1])
    y_lo, y_hi = min(ys), max(ys)
    pad = (y_hi - y_lo) * 0.1 or abs(y_hi) * 0.1 or 1.0
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def px(x: float) -> float:
        return left + (fx(x) - x_lo) / ((x_hi - x_lo) or 1) * (width - left - right)

    def py(y: float) -> float:
        return height - bottom - (y - y_lo) / (y_hi - y_lo) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="black"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
             f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">{escape(x_label)}</text>',
             f'<text x="14" y="{(top + height - bottom) / 2}" text-anchor="middle" '
             f'transform="rotate(-90 14 {(top + height - bottom) / 2})">{escape(y_label)}</text>']
    for x in xs:
        parts.append(f'<text x="{px(x):.1f}" y="{height - bottom + 15}" text-anchor="middle">{x:g}</text>')
    for i in range(5):
        y = y_lo + (y_hi - y_lo) * i / 4
        parts.append(f'<line x1="{left - 4}" y1="{py(y):.1f}" x2="{width - right}" y2="{py(y):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.4g}</text>')
    for k, (name, points) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        finite = [(x, y) for x, y in sorted(points.items()) if math.isfinite(y)]
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in finite)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.extend(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>' for x, y in finite)
        parts.append(f'<rect x="{width - right - 110}" y="{top + 4 + 16 * k}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{width - right - 96}" y="{top + 13 + 16 * k}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
