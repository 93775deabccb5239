"""The Effects view: each value of a swept parameter against its baseline value, paired within
rounds (``doc.effects``, made by ``bench.effects``), as a table, a forest plot around 0% and the
cells that had no counterpart."""

from __future__ import annotations

from typing import Any

from bench.records import EffectRecord
from bench.report.figures import MAX_HEIGHT, ROW_PX, embed, esc, layout, rnd_all
from bench.report.model import Block, Bullets, Cell, Column, Context, Section, Table, View, num
from bench.results import Run

UP, DOWN, NEUTRAL = "#2e7d32", "#c62828", "#5f6368"
SYMBOLS = ["circle", "diamond", "square", "triangle-up", "cross"]  # one per run
MAX_OPEN_MISSING = 12  # more cells than this come folded: the table and the plot say the rest
PANEL_EXTRA = 40  # px of a panel besides its rows: its title and x ticks


def pct(ratio: float) -> float:
    return (ratio - 1) * 100


def effect_texts(ratio: float, low: float, high: float) -> tuple[str, str, str]:
    """A ratio and its interval as people read them: percentage changes while all three stay
    between halving and doubling (``-3.1%``), else factors (``0.0094x``: "-99.1%" would hide how
    many times slower), the same for all three so that they compare at a glance."""
    if all(0.5 <= v <= 2 for v in (ratio, low, high)):
        return f"{pct(ratio):+.1f}%", f"{pct(low):+.1f}%", f"{pct(high):+.1f}%"
    return f"{ratio:.3g}x", f"{low:.3g}x", f"{high:.3g}x"


def _paired(e: EffectRecord) -> tuple[float, float, float] | None:
    """Ratio and interval, or None where there is no paired figure."""
    if e.ratio is None or e.low is None or e.high is None:
        return None
    return e.ratio, e.low, e.high


def label(e: EffectRecord) -> str:
    """A row of the forest plot, in its parameter's panel."""
    return f"{e.value} vs {e.baseline}"


def direction(e: EffectRecord) -> str:
    """``up`` or ``down`` where the interval excludes no change, else ``""``."""
    paired = _paired(e)
    if paired is None:
        return ""
    _, low, high = paired
    return "up" if low > 1 else "down" if high < 1 else ""


def build(ctx: Context) -> View | None:
    found = [(run, e) for run in ctx.runs for e in run.doc.effects]
    if not found:
        return None
    blocks: list[Block] = []
    if any(_paired(e) for _, e in found):
        blocks.append(embed(ctx, _forest(ctx, found), caption=(
            "Points: the paired change in throughput against the baseline value; bars: its 95% interval "
            "over rounds. Green or red where the interval excludes no change (0%). Values without a paired "
            "figure are not drawn; the table says why.")))
    blocks.append(_table(ctx, found))
    missing = [f"{run.label}: {text}" if ctx.multi_run else text for run, e in found for text in e.missing]
    if missing:
        title = f"Cells without a counterpart ({len(missing)})"
        listed = Bullets("", missing, cls="missing-cells")
        blocks.append(Section(title, [listed], open=len(missing) <= MAX_OPEN_MISSING))
    return View("effects", "Effects", "How much each value of a swept parameter changes throughput against its "
                "baseline value (the first in the suite), paired within rounds: each round's ratio compares two "
                "cases that differ in that parameter alone and ran in the same randomized round, so the machine's "
                "drift cancels, and the 95% interval is over rounds.", blocks)


def _table(ctx: Context, found: list[tuple[Run, EffectRecord]]) -> Table:
    columns = ([Column("run")] if ctx.multi_run else []) + [
        Column("parameter"), Column("value"), Column("baseline"),
        Column("change", True, "throughput with the value over with the baseline: a percentage change, or a "
                               "factor (x) beyond halving or doubling"),
        Column("95% CI", True, "interval of the change over rounds (one paired ratio per round)"),
        Column("rounds", True, "rounds the interval rests on"),
        Column("pairs", True, "case pairs that differ in this parameter alone"),
        Column("notes")]
    rows = []
    for run, e in found:
        paired = _paired(e)
        cells = [Cell(run.label)] if ctx.multi_run else []
        cells += [Cell(e.parameter), Cell(e.value), Cell(e.baseline)]
        if paired is None:
            cells += [Cell("no paired figure", cls="notes"), Cell("")]
        else:
            ratio, low, high = paired
            cls = f"effect-{direction(e)}" if direction(e) else ""
            texts = effect_texts(ratio, low, high)
            cells += [Cell(texts[0], sort=ratio - 1, cls=cls), Cell(f"{texts[1]} to {texts[2]}", sort=low - 1)]
        cells += [num(e.rounds, 0), num(e.pairs, 0)]
        notes = [e.method] if e.method else []
        if e.missing:
            notes.append(f"{len(e.missing)} cell{'s' if len(e.missing) != 1 else ''} without a counterpart")
        elif paired is None:
            notes.append("fewer than 2 rounds in which a pair of cases both ran")
        cells.append(Cell("; ".join(notes), cls="notes"))
        rows.append(cells)
    return Table(ctx.new_id("table"), columns, rows, caption="Paired effects against each parameter's baseline")


def _forest(ctx: Context, found: list[tuple[Run, EffectRecord]]) -> Any:
    """One row per parameter=value, a point at the change with its interval, a line at 0%; one
    panel per parameter with its own x axis, so that a model that is 99% slower does not squeeze
    an optimizer's 2% into the zero line."""
    from plotly.subplots import make_subplots

    drawn = [(run, e, p) for run, e in found if (p := _paired(e)) is not None]
    parameters = list(dict.fromkeys(e.parameter for _, e, _ in drawn))
    runs = [run for run in ctx.runs if any(r is run for r, _, _ in drawn)]
    rows_of = {name: list(dict.fromkeys(esc(label(e)) for _, e, _ in drawn if e.parameter == name))
               for name in parameters}
    heights = [PANEL_EXTRA + len(rows_of[name]) * max(ROW_PX, 9 * len(runs) + 8) for name in parameters]
    gap = 60
    area = sum(heights) + gap * (len(heights) - 1)
    fig = make_subplots(rows=len(parameters), cols=1, row_heights=[h / sum(heights) for h in heights],
                        vertical_spacing=gap / area if len(parameters) > 1 else 0.0,
                        subplot_titles=[esc(name) for name in parameters])
    for row, name in enumerate(parameters, start=1):
        for i, run in enumerate(runs):
            mine = [(e, p) for r, e, p in drawn if r is run and e.parameter == name]
            if not mine:
                continue
            fig.add_scatter(
                name=esc(run.label), legendgroup=esc(run.label), showlegend=row == 1 and ctx.multi_run,
                mode="markers", y=[esc(label(e)) for e, _ in mine], x=rnd_all(pct(p[0]) for _, p in mine),
                marker={"size": 9, "symbol": SYMBOLS[i % len(SYMBOLS)],
                        "color": [{"up": UP, "down": DOWN}.get(direction(e), NEUTRAL) for e, _ in mine]},
                error_x={"type": "data", "symmetric": False, "thickness": 1.5, "width": 4,
                         "array": rnd_all(max(0.0, pct(p[2]) - pct(p[0])) for _, p in mine),
                         "arrayminus": rnd_all(max(0.0, pct(p[0]) - pct(p[1])) for _, p in mine)},
                customdata=[[*effect_texts(*p), e.rounds, e.pairs] for e, p in mine],
                hovertemplate="%{y}<br>%{customdata[0]} (95% interval %{customdata[1]} to %{customdata[2]})"
                              "<br>over %{customdata[3]} rounds, %{customdata[4]} pairs<extra>%{fullData.name}</extra>",
                row=row, col=1)
        # Zero (no change) is always in view: an effect is read against it.
        lows = [pct(p[1]) for _, e, p in drawn if e.parameter == name]
        highs = [pct(p[2]) for _, e, p in drawn if e.parameter == name]
        low, high = min(0.0, *lows), max(0.0, *highs)
        pad = max(0.5, 0.08 * (high - low))
        fig.update_xaxes(range=[low - pad, high + pad], ticksuffix="%", zeroline=True, zerolinecolor="#333",
                         zerolinewidth=1, row=row, col=1)
        fig.update_yaxes(type="category", autorange="reversed", categoryorder="array",
                         categoryarray=rows_of[name], row=row, col=1)
    fig.update_xaxes(title_text="change in throughput against the baseline value (%)", row=len(parameters), col=1)
    fig.update_annotations(font={"size": 13})
    fig.update_layout(layout("Paired effects against the baseline value (95% intervals over rounds)",
                             int(min(MAX_HEIGHT, area + 150)), showlegend=ctx.multi_run, hovermode="closest"))
    return fig
