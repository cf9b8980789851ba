"""Charts for the WUI, drawn on the server as SVG (no script, no chart library): a line chart
of one statistic over time, and the timeline of both units' HA states. Pure: data in, markup
out; every number is formatted here, no text from the data reaches the markup unescaped."""

from __future__ import annotations

import html
import time

from markupsafe import Markup

STATE_COLOURS = {"master": "#2e7d32", "backup": "#90a4ae", "init": "#ffb300"}


def _fmt(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.1f}" if value % 1 else f"{value:.0f}"


def line_chart(
    points: list[tuple[float, float]],
    start: float,
    end: float,
    title: str,
    unit: str = "",
    width: int = 560,
    height: int = 110,
) -> Markup:
    """Values over [start, end]: a polyline scaled to the largest value, the newest value and
    the peak in the title."""
    pad, inner_w, inner_h = 4, width - 8, height - 26
    span = max(end - start, 1e-9)
    peak = max((v for _t, v in points), default=0.0) or 1.0
    coords = " ".join(
        f"{pad + (t - start) / span * inner_w:.1f},{22 + inner_h - v / peak * inner_h:.1f}"
        for t, v in points
        if start <= t <= end
    )
    last = points[-1][1] if points else 0.0
    label = html.escape(
        f"{title}: {_fmt(last)}{unit} now, peak {_fmt(peak if points else 0)}{unit}"
    )
    return Markup(
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{label}" data-points="{len(points)}">'
        f'<text x="{pad}" y="14" font-size="12">{label}</text>'
        f'<rect x="{pad}" y="22" width="{inner_w}" height="{inner_h}" fill="none" stroke="#ccc"/>'
        + (
            f'<polyline fill="none" stroke="#1565c0" stroke-width="1.5" points="{coords}"/>'
            if coords
            else ""
        )
        + "</svg>"
    )


def timeline(units: dict[str, list[dict]], start: float, end: float, width: int = 560) -> Markup:
    """One bar per unit over [start, end], coloured by its HA state: `units` is role -> its
    transitions (time, old, new), any order."""
    row, pad = 18, 70
    height = row * len(units) + 16
    span = max(end - start, 1e-9)
    parts = []
    for n, (role, transitions) in enumerate(sorted(units.items())):
        y = 4 + n * row
        parts.append(f'<text x="0" y="{y + 12}" font-size="12">{html.escape(role)}</text>')
        changes = sorted((e["time"], str(e["new"])) for e in transitions if e.get("time"))
        before = [s for t, s in changes if t <= start]
        state, at = (before[-1] if before else "init"), start
        for t, new in [(t, s) for t, s in changes if start < t <= end] + [(end, "")]:
            x0 = pad + (at - start) / span * (width - pad)
            x1 = pad + (t - start) / span * (width - pad)
            colour = STATE_COLOURS.get(state, "#e0e0e0")
            title = html.escape(
                f"{role} {state} from {time.strftime('%H:%M:%S', time.localtime(at))}"
            )
            parts.append(
                f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 0.5):.1f}" height="{row - 4}" '
                f'fill="{colour}" data-state="{html.escape(state)}"><title>{title}</title></rect>'
            )
            state, at = new, t
    return Markup(
        f'<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="HA states">{"".join(parts)}</svg>'
    )
