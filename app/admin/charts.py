"""Small server-rendered SVG charts: no JavaScript, no library, nothing fetched by the browser."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 360, 64


def line_chart(values: Sequence[float | None], *, label: str, unit: str = "", marks: Sequence[int] = ()) -> Markup:
    """A line over ``values`` (oldest first; None leaves a gap), scaled to its maximum, with the
    maximum and the latest value written beside it; ``marks`` (indices into ``values``) draw a
    vertical line each, for events such as a worker joining or leaving."""
    known = [v for v in values if v is not None]
    top = max(known, default=0) or 1
    step = WIDTH / max(1, len(values) - 1)
    segments: list[list[str]] = [[]]
    for i, value in enumerate(values):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        segments[-1].append(f"{i * step:.1f},{HEIGHT - 2 - (HEIGHT - 4) * value / top:.1f}")
    lines = "".join(f'<polyline points="{" ".join(s)}"/>' for s in segments if len(s) > 1)
    dots = "".join(
        f'<circle cx="{s[0].split(",")[0]}" cy="{s[0].split(",")[1]}" r="1.5"/>' for s in segments if len(s) == 1
    )
    ticks = "".join(f'<line class="mark" x1="{i * step:.1f}" x2="{i * step:.1f}" y1="0" y2="{HEIGHT}"/>' for i in marks)
    latest = next((v for v in reversed(values) if v is not None), None)
    caption = f"{escape(label)}: now {_number(latest)}{unit}, max {_number(max(known, default=None))}{unit}"
    return Markup(
        f'<figure class="chart"><svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{caption}"><rect width="{WIDTH}" height="{HEIGHT}"/>{ticks}{lines}{dots}</svg>'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _number(value: float | None) -> str:
    if value is None:
        return "\u2013"
    return f"{value:,.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.2f}"
