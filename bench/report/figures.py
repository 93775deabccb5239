"""Plotly helpers shared by the views: one small theme, text escaping for plotly's HTML-like
labels, compact numbers, and figures serialised as JSON that is safe inside ``<script>``."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from bench.report.model import Context, FigureBlock, Section

if TYPE_CHECKING:
    import plotly.graph_objects as go

# Okabe-Ito-like palette: distinguishable for colour-blind readers and in print.
COLORWAY = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
            "#7f7f7f", "#8c564b"]
VERDICT_COLOURS = {"regression": "#c62828", "improvement": "#2e7d32", "unchanged": "#9e9e9e",
                   "inconclusive": "#f9a825", None: "#0072B2"}

# A theme of a few lines instead of plotly's default template, which would add ~6 kB to every figure.
_AXIS = {"gridcolor": "#e6e6e6", "linecolor": "#888", "zerolinecolor": "#bbb", "automargin": True,
         "title": {"standoff": 8}}
THEME: dict[str, Any] = {"layout": {
    "font": {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12, "color": "#222"},
    "paper_bgcolor": "white", "plot_bgcolor": "white", "colorway": COLORWAY,
    "xaxis": _AXIS, "yaxis": _AXIS, "hoverlabel": {"namelength": -1},
    "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
    "margin": {"l": 10, "r": 20, "t": 70, "b": 50}, "title": {"x": 0, "xanchor": "left"},
}}

CONFIG = {"responsive": True, "displaylogo": False}
ROW_PX = 22  # height of one category on a horizontal bar chart: labels stay legible, never overlap
MAX_HEIGHT = 20_000
FOLD_HEIGHT = 3_000  # px: about three screens


def esc(text: Any) -> str:
    """Plotly renders labels as a small subset of HTML; escape so that they show as typed."""
    return html.escape(str(text), quote=False)


def rnd(value: float | None, digits: int = 4) -> float | None:
    """Round to significant digits: the page carries 4 digits per number instead of 17 (charts show
    no more), and a whole number without its ``.0`` (a thousand cases' numbers add up)."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0
    rounded = round(value, digits - 1 - math.floor(math.log10(abs(value))))
    return int(rounded) if rounded.is_integer() and abs(rounded) < 2**53 else rounded


def rnd_all(values: Iterable[float | None], digits: int = 4) -> list[float | None]:
    return [rnd(v, digits) for v in values]


def bar_height(categories: int, groups: int = 1, extra: int = 130) -> int:
    """Height of a horizontal bar chart: every category gets a legible row, every group a bar."""
    per_category = max(ROW_PX, 9 * groups + 8)
    return int(min(MAX_HEIGHT, max(260, extra + categories * per_category)))


def layout(title: str, height: int, **extra: Any) -> dict[str, Any]:
    return {"template": THEME, "title": {"text": title}, "height": height, **extra}


def embed(ctx: Context, fig: go.Figure, caption: str = "") -> FigureBlock | Section:
    """The figure as a page block; a chart taller than a few screens (hundreds of cases) comes
    folded, drawn when opened, so the page stays quick to load and to scroll past."""
    height = int(fig.layout.height or 450)
    block = FigureBlock(id=ctx.new_id("fig"), spec=figure_json(fig), height=height, caption=caption)
    if height <= FOLD_HEIGHT:
        return block
    title = html.unescape(fig.layout.title.text or "chart")
    return Section(f"{title} (a tall chart: open to draw it)", [block], open=False)


def figure_json(fig: go.Figure) -> str:
    """The figure as JSON; ``<``, ``>`` and ``&`` occur only inside strings there, so escaping them
    as ``\\u003c`` etc. keeps the JSON identical and makes ``</script>`` impossible."""
    import plotly.io as pio

    return script_safe(pio.to_json(fig, validate=False))


def data_json(value: Any) -> str:
    """Plain data (lists, dicts, numbers, strings) as compact JSON, safe inside ``<script>``."""
    return script_safe(json.dumps(value, separators=(",", ":"), allow_nan=False))


def script_safe(text: str) -> str:
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def ci_errors(medians: Sequence[float], lows: Sequence[float], highs: Sequence[float],
              ) -> dict[str, Any]:
    """Asymmetric error bars from CI bounds (never negative, even if a bound is on the wrong side)."""
    return {"type": "data", "symmetric": False, "thickness": 1.2, "width": 3,
            "array": rnd_all(max(0.0, h - m) for m, h in zip(medians, highs, strict=True)),
            "arrayminus": rnd_all(max(0.0, m - lo) for m, lo in zip(medians, lows, strict=True))}
