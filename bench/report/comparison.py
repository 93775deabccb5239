"""The Comparison view: every case found in several runs, its metric in each run, and the change
against the first (baseline) run, coloured by the verdict of the statistics where the caller
supplies comparisons, and shown as a plain ratio where it does not."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.report.figures import VERDICT_COLOURS, bar_height, embed, esc, layout, rnd_all
from bench.report.model import (
    Block,
    Cell,
    Column,
    ComparisonLike,
    Context,
    Note,
    Table,
    View,
    as_float,
    percent,
)

THROUGHPUT = "throughput"


@dataclass
class _Change:
    value: float | None
    change: float | None
    verdict: str | None = None
    message: str = ""


@dataclass
class _Line:
    case_id: str
    metric: str
    base: float | None
    changes: dict[int, _Change]  # run index (1..) -> change against run 0


def _from_ratios(ctx: Context) -> list[_Line]:
    """Without statistics: the median throughput of each run and its ratio to the baseline's."""
    by_run: list[dict[str, float]] = []
    for i in range(len(ctx.runs)):
        by_run.append({r.id: thr[0] for r in ctx.rows if r.run_index == i and (thr := r.throughput) is not None})
    ids = list(dict.fromkeys(case_id for values in by_run for case_id in values))
    lines = []
    for case_id in ids:
        if sum(case_id in values for values in by_run) < 2:
            continue
        base = by_run[0].get(case_id)
        changes = {}
        for i, values in enumerate(by_run[1:], start=1):
            new = values.get(case_id)
            changes[i] = _Change(new, new / base - 1 if new is not None and base else None)
        lines.append(_Line(case_id, THROUGHPUT, base, changes))
    return lines


def _from_comparisons(ctx: Context, comparisons: list[ComparisonLike]) -> list[_Line]:
    """Each comparison holds one run against the baseline (run 0): the run its ``new_label`` names,
    or else run ``i + 1`` for the i-th comparison."""
    labels = [run.label for run in ctx.runs]
    lines: dict[tuple[str, str], _Line] = {}
    for n, comparison in enumerate(comparisons, start=1):
        new_label = getattr(comparison, "new_label", None)
        i = labels.index(new_label) if new_label in labels[1:] else n
        for row in comparison.rows:
            key = (str(row.case_id), str(row.metric))
            line = lines.setdefault(key, _Line(key[0], key[1], as_float(row.base), {}))
            ci = getattr(row, "ci95", None)
            p_value = as_float(getattr(row, "p_value", None))
            detail = [str(getattr(row, "message", "") or "")]
            if ci and len(ci) == 2 and None not in ci:
                detail.append(f"95% CI of the change: {percent(ci[0])} to {percent(ci[1])}")
            if p_value is not None:
                detail.append(f"p = {p_value:.3g}")
            line.changes[i] = _Change(as_float(row.new), as_float(row.change), str(row.verdict),
                                      "; ".join(d for d in detail if d))
    return list(lines.values())


def _value(value: float | None) -> Cell:
    return Cell("" if value is None else f"{value:,.4g}", sort=value)


def build(ctx: Context) -> View | None:
    if not ctx.multi_run:
        return None
    lines = _from_comparisons(ctx, ctx.comparisons) if ctx.comparisons else _from_ratios(ctx)
    if not lines:
        return None
    others = range(1, len(ctx.runs))
    columns = [Column("case"), Column("metric"), Column(f"{ctx.runs[0].label} (baseline)", True)]
    for i in others:
        columns += [Column(ctx.runs[i].label, True), Column(f"change: {ctx.runs[i].label}", True,
                                                             "new / baseline - 1")]
    rows = []
    for line in lines:
        cells = [Cell(line.case_id), Cell(line.metric), _value(line.base)]
        for i in others:
            ch = line.changes.get(i) or _Change(None, None)
            text = percent(ch.change) + (f" {ch.verdict}" if ch.verdict and ch.change is not None else "")
            cls = f"verdict-{ch.verdict}" if ch.verdict else "change"
            cells += [_value(ch.value), Cell(text, sort=ch.change, cls=cls, title=ch.message)]
        rows.append(cells)
    blocks: list[Block] = [embed(ctx, _change_figure(ctx, lines))]
    if ctx.comparisons:
        blocks.append(Note("Colour: red regression, green improvement, grey unchanged, amber inconclusive "
                           "(hover a change for the test behind it).", cls="legend"))
    else:
        blocks.append(Note("Plain ratios of median throughput; no significance test was applied.", cls="legend"))
    blocks.append(Table(ctx.new_id("table"), columns, rows, caption="Per case and metric", filterable=True))
    return View("comparison", "Comparison", f"Cases found in several runs, against the baseline run "
                f"'{ctx.runs[0].label}'.", blocks)


def _change_figure(ctx: Context, lines: list[_Line]) -> Any:
    import plotly.graph_objects as go

    metric = THROUGHPUT if any(line.metric == THROUGHPUT for line in lines) else lines[0].metric
    chosen = [line for line in lines if line.metric == metric]
    fig = go.Figure()
    for i in range(1, len(ctx.runs)):
        points = [(line, line.changes[i]) for line in chosen
                  if i in line.changes and line.changes[i].change is not None]
        if not points:
            continue
        fig.add_bar(
            name=esc(ctx.runs[i].label), orientation="h", y=[esc(line.case_id) for line, _ in points],
            x=rnd_all((ch.change or 0.0) * 100 for _, ch in points),
            marker={"color": [VERDICT_COLOURS.get(ch.verdict, VERDICT_COLOURS[None]) for _, ch in points],
                    "line": {"color": "#333", "width": 0.5}},
            customdata=[esc(ch.verdict or "ratio only") for _, ch in points],
            hovertemplate="%{y}<br>%{x:+.1f}% (%{customdata})<extra>%{fullData.name}</extra>")
    categories = list(dict.fromkeys(line.case_id for line in chosen))
    fig.add_vline(x=0, line={"color": "#333", "width": 1})
    fig.update_layout(layout(f"Change in {esc(metric)} against {esc(ctx.runs[0].label)}",
                             bar_height(len(categories), max(1, len(fig.data))), barmode="group",
                             showlegend=len(fig.data) > 1,
                             xaxis={"title": {"text": f"change in {esc(metric)} (%)"}, "ticksuffix": "%"},
                             yaxis={"type": "category", "autorange": "reversed", "categoryorder": "array",
                                    "categoryarray": [esc(c) for c in categories]}))
    return fig
