"""Occupancy charts as plain data for server-rendered SVG (no script, no inline styles).

The template draws what these return: polylines with their points already scaled, axis ticks
and a one-line text summary for screen readers. Colours come from CSS classes (`series-N`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    points: Sequence[tuple[datetime, int, int]]  # (time, occupied, total)


def _percent(occupied: int, total: int) -> float:
    return 100.0 * occupied / total if total else 0.0


def line_chart(series: Sequence[Series], tz: Any, width: int = 760, height: int = 260) -> dict[str, Any]:
    left, right, top, bottom = 48, 16, 12, 36
    inner_w, inner_h = width - left - right, height - top - bottom
    lines: list[dict[str, Any]] = []
    start = end = None
    for s in series:
        if s.points:
            start = s.points[0][0] if start is None else min(start, s.points[0][0])
            end = s.points[-1][0] if end is None else max(end, s.points[-1][0])
    if start is None or end is None or end <= start:
        return {"width": width, "height": height, "lines": [], "xticks": [], "yticks": [], "summary": ""}
    span = (end - start).total_seconds()

    def x(moment: datetime) -> float:
        return left + inner_w * (moment - start).total_seconds() / span

    def y(percent: float) -> float:
        return top + inner_h * (1 - percent / 100.0)

    summary = []
    for n, s in enumerate(series):
        pts = " ".join(f"{x(t):.1f},{y(_percent(o, tot)):.1f}" for t, o, tot in s.points)
        lines.append({"label": s.label, "css": f"series-{n % 6}", "points": pts})
        if s.points:
            first, last = s.points[0], s.points[-1]
            then, now = _percent(first[1], first[2]), _percent(last[1], last[2])
            summary.append(f"{s.label}: {then:.0f}% a week ago, {now:.0f}% now")
    xticks = []
    day = start.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    while day < end:
        xticks.append({"x": round(x(day), 1), "label": day.strftime("%a %d")})
        day = (day + timedelta(days=1, hours=2)).replace(hour=0)
    yticks = [{"y": round(y(p), 1), "label": f"{p}%"} for p in (0, 25, 50, 75, 100)]
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": width - right,
        "top": top,
        "bottom": height - bottom,
        "lines": lines,
        "xticks": xticks,
        "yticks": yticks,
        "summary": "; ".join(summary),
    }


def sparkline(points: Sequence[tuple[datetime, int]], total: int, width: int = 120, height: int = 28) -> str:
    """Polyline points for a tiny occupancy line (occupied beds out of `total`)."""
    if len(points) < 2 or total <= 0:
        return ""
    n = len(points) - 1
    return " ".join(
        f"{width * i / n:.1f},{height - 2 - (height - 4) * min(occupied, total) / total:.1f}"
        for i, (_t, occupied) in enumerate(points)
    )
