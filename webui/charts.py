"""Small SVG charts drawn on the server: no script, no external assets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

PALETTE = ("#0b5cad", "#1a7f37", "#9a6700", "#8250df", "#b42318", "#57606a")
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 640, 180, 36, 22, 8


def line_chart(labels: Sequence[str], series: Mapping[str, Sequence[int]], title: str) -> Markup:
    """Draw one line per series over the labels (e.g. deliveries a minute per plugin)."""
    peak = max([1, *(max(values, default=0) for values in series.values())])
    step = (WIDTH - LEFT) / max(1, len(labels) - 1)
    parts = [_frame(title, peak)]
    for i, (name, values) in enumerate(sorted(series.items())):
        points = " ".join(f"{LEFT + j * step:.1f},{_y(v, peak):.1f}" for j, v in enumerate(values))
        colour = PALETTE[i % len(PALETTE)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}">'
                     f"<title>{escape(name)}</title></polyline>")  # fmt: skip
    parts.append(_x_labels(labels, step))
    parts.append(_legend(list(sorted(series))))
    return Markup("".join(parts) + "</svg>")


def stacked_bars(labels: Sequence[str], pairs: Sequence[tuple[int, int]],
                 names: tuple[str, str], title: str) -> Markup:  # fmt: skip
    """Draw one bar per label, split in two stacked parts (e.g. with and without context)."""
    peak = max([1, *(a + b for a, b in pairs)])
    slot = (WIDTH - LEFT) / max(1, len(labels))
    parts = [_frame(title, peak)]
    for j, (first, second) in enumerate(pairs):
        x = LEFT + j * slot + slot * 0.15
        width = slot * 0.7
        for value, base, colour in ((first, 0, PALETTE[1]), (second, first, PALETTE[5])):
            if value:
                top, bottom = _y(base + value, peak), _y(base, peak)
                parts.append(f'<rect x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" '
                             f'height="{bottom - top:.1f}" fill="{colour}">'
                             f"<title>{escape(labels[j])}: {value}</title></rect>")  # fmt: skip
    parts.append(_x_labels(labels, slot, offset=slot / 2))
    parts.append(_legend(list(names), colours=(PALETTE[1], PALETTE[5])))
    return Markup("".join(parts) + "</svg>")


def _y(value: float, peak: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - value / peak)


def _frame(title: str, peak: int) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT + 18}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>"
        f'<line x1="{LEFT}" y1="{_y(0, peak)}" x2="{WIDTH}" y2="{_y(0, peak)}" stroke="#d1d9e0"/>'
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" font-size="10">{peak}</text>'
        f'<text x="{LEFT - 4}" y="{_y(0, peak)}" text-anchor="end" font-size="10">0</text>'
    )


def _x_labels(labels: Sequence[str], step: float, offset: float = 0.0) -> str:
    every = max(1, len(labels) // 6)
    return "".join(
        f'<text x="{LEFT + offset + j * step:.1f}" y="{HEIGHT - 6}" text-anchor="middle" '
        f'font-size="10">{escape(label)}</text>'
        for j, label in enumerate(labels) if j % every == 0
    )  # fmt: skip


def _legend(names: list[str], colours: Sequence[str] = PALETTE) -> str:
    return "".join(
        f'<rect x="{LEFT + i * 140}" y="{HEIGHT + 6}" width="10" height="10" '
        f'fill="{colours[i % len(colours)]}"/>'
        f'<text x="{LEFT + i * 140 + 14}" y="{HEIGHT + 15}" font-size="11">{escape(name)}</text>'
        for i, name in enumerate(names)
    )
