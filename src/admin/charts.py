"""Small server-rendered SVG charts (no script, no inline style: the CSP allows neither).

Geometry only; colours come from classes in ``admin.css``, so the dark theme applies too.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from admin.formatting import Formatter
from jobs.admin_queries import HourBucket

__all__ = ("hourly_chart", "rate_chart")

_W = 480
_H = 140
_PAD_BOTTOM = 18
_PAD_TOP = 8


def _nice_max(value: int) -> int:
    for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000):
        if value <= step * 4:
            return step * 4
    return value


def hourly_chart(buckets: Sequence[HourBucket], fmt: Formatter, label: str) -> Markup:
    """Stacked bars per hour (completed, failed) with the submissions as a line."""
    if not buckets:
        return Markup("")
    top = _nice_max(max(max(b.completed + b.failed, b.submitted) for b in buckets))
    plot_h = _H - _PAD_BOTTOM - _PAD_TOP
    slot = _W / len(buckets)
    bar_w = max(slot * 0.7, 1.0)
    parts: list[str] = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-label="{escape(label)}" '
        f'preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i in range(5):
        y = _PAD_TOP + plot_h * i / 4
        parts.append(f'<line class="chart__grid" x1="0" x2="{_W}" y1="{y:.1f}" y2="{y:.1f}"/>')
    points: list[str] = []
    for i, b in enumerate(buckets):
        x = i * slot + (slot - bar_w) / 2
        h_ok = plot_h * b.completed / top
        h_bad = plot_h * b.failed / top
        base = _PAD_TOP + plot_h
        title = escape(
            f"{fmt.time(b.start)} · {fmt.number(b.submitted)} / {fmt.number(b.completed)} / {fmt.number(b.failed)}"
        )
        parts.append(f"<g><title>{title}</title>")
        if b.completed:
            parts.append(
                f'<rect class="chart__ok" x="{x:.1f}" y="{base - h_ok:.1f}" width="{bar_w:.1f}" height="{h_ok:.1f}"/>'
            )
        if b.failed:
            parts.append(
                f'<rect class="chart__bad" x="{x:.1f}" y="{base - h_ok - h_bad:.1f}" '
                f'width="{bar_w:.1f}" height="{h_bad:.1f}"/>'
            )
        parts.append(
            f'<rect class="chart__hit" x="{i * slot:.1f}" y="{_PAD_TOP}" width="{slot:.1f}" height="{plot_h}"/></g>'
        )
        points.append(f"{i * slot + slot / 2:.1f},{base - plot_h * b.submitted / top:.1f}")
        if i % 6 == 0:
            x = i * slot + slot / 2
            parts.append(f'<text class="chart__label" x="{x:.1f}" y="{_H - 4}">{escape(fmt.time(b.start))}</text>')
    parts.append(f'<polyline class="chart__line" points="{" ".join(points)}"/>')
    parts.append(f'<text class="chart__label chart__label--top" x="4" y="{_PAD_TOP + 10}">{fmt.number(top)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - numbers and escaped labels only


def rate_chart(buckets: Sequence[HourBucket], fmt: Formatter, label: str) -> Markup:
    """The failure rate per hour, as an area (0 to 100 %)."""
    if not buckets:
        return Markup("")
    plot_h = 60
    slot = _W / len(buckets)
    coords: list[str] = []
    for i, b in enumerate(buckets):
        finished = b.completed + b.failed
        rate = b.failed / finished if finished else 0.0
        coords.append(f"{i * slot + slot / 2:.1f},{4 + plot_h * (1 - rate):.1f}")
    area = f"{slot / 2:.1f},{plot_h + 4} " + " ".join(coords) + f" {_W - slot / 2:.1f},{plot_h + 4}"
    return Markup(  # noqa: S704 - numbers and an escaped label only
        f'<svg class="chart chart--rate" viewBox="0 0 {_W} {plot_h + 8}" role="img" aria-label="{escape(label)}" '
        f'preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">'
        f'<line class="chart__grid" x1="0" x2="{_W}" y1="4" y2="4"/>'
        f'<line class="chart__grid" x1="0" x2="{_W}" y1="{plot_h + 4}" y2="{plot_h + 4}"/>'
        f'<polygon class="chart__area" points="{area}"/>'
        f'<polyline class="chart__bad-line" points="{" ".join(coords)}"/>'
        f'<text class="chart__label chart__label--top" x="4" y="14">{escape(fmt.percent(1))}</text></svg>'
    )
