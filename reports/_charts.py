"""Charts as SVG text, drawn by matplotlib (Agg), deterministic and greyscale-safe.

Determinism: a fixed ``svg.hashsalt`` (element ids), no ``Date`` metadata, text kept as
text (``svg.fonttype = none``, so it stays searchable in the PDF). Style settings are
scoped with ``rc_context``; no global state changes. Every chart labels its axes with
units, and reference lines (the four-fifths line, PSI limits) are drawn dashed with a
label, so they read without colour.
"""

from __future__ import annotations

import io
import itertools
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["bars", "lineage", "volume"]

_RC: dict[str, Any] = {
    "svg.hashsalt": "mlledger-report",
    "svg.fonttype": "none",
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#333333",
    "axes.labelcolor": "#000000",
    "xtick.color": "#000000",
    "ytick.color": "#000000",
}
_FILL = ("#4d4d4d", "#a6a6a6", "#d9d9d9")


@contextmanager
def _figure(width: float, height: float) -> Iterator[Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
        fig = plt.figure(figsize=(width, height))
        try:
            yield fig
        finally:
            plt.close(fig)


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "mlledger"}, bbox_inches="tight")
    return buf.getvalue()


def bars(labels: Sequence[str], values: Sequence[float | None], *, xlabel: str, title: str,
         lines: Sequence[tuple[float, str]] = (), errors: Sequence[float | None] | None = None,
         flag_below: float | None = None, value_format: str = "{:.3f}") -> str:
    """Horizontal bars (None drawn as "n/a"), with dashed labelled reference lines.

    Bars below ``flag_below`` are hatched, so a failing group stands out in greyscale.
    """
    n = max(len(labels), 1)
    with _figure(6.2, 0.9 + 0.28 * n) as fig:
        ax = fig.add_subplot(1, 1, 1)
        ys = list(range(len(labels)))[::-1]
        vals = [0.0 if v is None else float(v) for v in values]
        hatch = ["//" if flag_below is not None and v is not None and v < flag_below else "" for v in values]
        err = None if errors is None else [0.0 if e is None else float(e) for e in errors]
        for y, v, h, raw in zip(ys, vals, hatch, values, strict=True):
            ax.barh(y, v, color=_FILL[1] if h else _FILL[0], hatch=h, edgecolor="#000000", linewidth=0.5)
            ax.text(v, y, "  n/a" if raw is None else "  " + value_format.format(v), va="center", fontsize=7)
        if err is not None:
            ax.errorbar(vals, ys, xerr=err, fmt="none", ecolor="#000000", elinewidth=0.8, capsize=2)
        top = max([*vals, *(x for x, _ in lines), 0.0])
        for x, text in lines:
            ax.axvline(x, color="#000000", linestyle="--", linewidth=0.9)
            ax.text(x, 1.0, f" {text}", fontsize=7, va="bottom", transform=ax.get_xaxis_transform())
        ax.set_yticks(ys, [str(x) for x in labels])
        ax.set_xlim(0, top * 1.18 if top > 0 else 1)
        ax.set_ylim(-0.6, len(labels) - 0.1 + 0.5)
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=9, loc="left", pad=14 if lines else 6)
        return _svg(fig)


def volume(per_day: Sequence[tuple[str, int]], *, title: str, ylabel: str) -> str:
    """Counts per day (UTC) as bars."""
    with _figure(6.2, 2.2) as fig:
        ax = fig.add_subplot(1, 1, 1)
        days = [d for d, _ in per_day]
        ax.bar(range(len(days)), [c for _, c in per_day], color=_FILL[0], edgecolor="#000000", linewidth=0.5)
        step = max(1, len(days) // 8)
        ax.set_xticks(range(0, len(days), step), days[::step], rotation=30, ha="right")
        ax.set_xlabel("date (UTC, ledger time)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9, loc="left")
        return _svg(fig)


def lineage(steps: Sequence[dict[str, Any]]) -> str:
    """The lineage chain as boxes and arrows, four to a row, read left to right, top to bottom."""
    per_row = 4
    rows = (len(steps) + per_row - 1) // per_row
    with _figure(6.6, 1.55 * rows) as fig:
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, per_row)
        ax.set_ylim(0, rows)
        ax.axis("off")
        centres = []
        for i, s in enumerate(steps):
            r, c = divmod(i, per_row)
            x, y = c + 0.5, rows - r - 0.5
            centres.append((x, y))
            items = list(s["items"])
            shown = [line for t in items[:3] for line in textwrap.wrap(str(t), 22)[:2]]
            shown += [f"+{len(items) - 3} more"] if len(items) > 3 else []
            ax.add_patch(_box(x, y))
            ax.text(x, y + 0.3, s["stage"].upper(), ha="center", va="center", fontsize=7.5, fontweight="bold")
            ax.text(x, y - 0.05, "\n".join(shown), ha="center", va="center", fontsize=6.2, linespacing=1.3)
        for (x0, y0), (x1, y1) in itertools.pairwise(centres):
            if y0 == y1:
                ax.annotate("", (x1 - 0.42, y1), (x0 + 0.42, y0), arrowprops={"arrowstyle": "->", "lw": 1})
            else:
                ax.annotate("", (x1, y1 + 0.44), (x0, y0 - 0.44),
                            arrowprops={"arrowstyle": "->", "lw": 1, "connectionstyle": "angle,angleA=0,angleB=90"})
        return _svg(fig)


def _box(x: float, y: float) -> Any:
    from matplotlib.patches import FancyBboxPatch

    return FancyBboxPatch((x - 0.42, y - 0.42), 0.84, 0.84, boxstyle="round,pad=0,rounding_size=0.05",
                          facecolor="#f2f2f2", edgecolor="#000000", linewidth=0.8)
