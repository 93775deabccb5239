"""The Scaling view: throughput and parallel efficiency against world size, DP, DDP and FSDP side by
side, from the ``scaling`` list that a run with several world sizes adds to its results."""

from __future__ import annotations

from typing import Any

from bench.labels import fmt_value
from bench.report.figures import COLORWAY, embed, esc, layout, rnd, rnd_all
from bench.report.model import Cell, Column, Context, Table, View, as_float, num
from bench.scaling import SCALING_MODES

MODE_ORDER = SCALING_MODES


def _entries(ctx: Context) -> list[dict[str, Any]]:
    entries = []
    for run in ctx.runs:
        for entry in run.doc.scaling:
            e = entry.model_dump(mode="json")
            group = f"{e['group']} ({e['scaling']})"
            entries.append({**e, "run": run.label, "series": f"{run.label} · {group}" if ctx.multi_run else group})
    return entries


def build(ctx: Context) -> View | None:
    from plotly.subplots import make_subplots

    entries = _entries(ctx)
    if not entries:
        return None
    modes = [m for m in MODE_ORDER if any(e.get("mode") == m for e in entries)]
    modes += sorted({str(e.get("mode")) for e in entries} - set(modes))
    series = list(dict.fromkeys(e["series"] for e in entries))
    sizes = sorted({e["world_size"] for e in entries})
    fig = make_subplots(rows=2, cols=len(modes), shared_xaxes=True, vertical_spacing=0.12, horizontal_spacing=0.08,
                        subplot_titles=[f"{esc(m).upper()}: {what}" for what in ("throughput", "parallel efficiency")
                                        for m in modes])
    legend_seen: set[str] = set()
    for col, mode in enumerate(modes, start=1):
        for i, name in enumerate(series):
            points = sorted((e for e in entries if e["series"] == name and e.get("mode") == mode),
                            key=lambda e: e["world_size"])
            if not points:
                continue
            colour = COLORWAY[i % len(COLORWAY)]
            sizes_here = [p["world_size"] for p in points]
            ws = [str(w) for w in sizes_here]
            show = name not in legend_seen
            legend_seen.add(name)
            fig.add_scatter(x=ws, y=rnd_all(as_float(p.get("throughput")) for p in points), mode="lines+markers",
                            name=esc(name), legendgroup=esc(name), showlegend=show, line={"color": colour},
                            customdata=[[esc(p.get("case_id", "")), rnd(as_float(p.get("speedup")))] for p in points],
                            hovertemplate="%{customdata[0]}<br>world size %{x}: %{y:,.1f} samples/s, "
                                          "speed-up %{customdata[1]:.2f}x<extra></extra>", row=1, col=col)
            # Ideal: the smallest world size's throughput, multiplied by the number of workers.
            base = points[0]
            base_thr = as_float(base.get("throughput"))
            if base_thr is not None:
                fig.add_scatter(x=ws, y=rnd_all(base_thr * w / base["world_size"] for w in sizes_here), mode="lines",
                                name="ideal (linear)", legendgroup="ideal", showlegend="ideal" not in legend_seen,
                                line={"color": colour, "dash": "dot", "width": 1}, hoverinfo="skip", row=1, col=col)
                legend_seen.add("ideal")
            fig.add_scatter(x=ws, y=rnd_all(_pct(p.get("efficiency")) for p in points), mode="lines+markers",
                            name=esc(name), legendgroup=esc(name), showlegend=False, line={"color": colour},
                            hovertemplate="world size %{x}: %{y:.1f}% efficiency<extra></extra>", row=2, col=col)
        fig.add_hline(y=100, line={"color": "#555", "dash": "dot", "width": 1}, row=2, col=col)
        fig.update_yaxes(title_text="throughput (samples/s)" if col == 1 else None, rangemode="tozero", row=1, col=col)
        fig.update_yaxes(title_text="efficiency (%)" if col == 1 else None, rangemode="tozero", row=2, col=col)
        # World sizes are a handful of process counts, not a continuous scale: a category axis has a
        # tick at each one measured and never at 1.5 processes (and spaces 1, 2, 4, 8 evenly).
        categories = {"type": "category", "categoryorder": "array", "categoryarray": [str(s) for s in sizes]}
        fig.update_xaxes(**categories, row=1, col=col)
        fig.update_xaxes(title_text="world size (processes)", **categories, row=2, col=col)
    fig.update_layout(layout("Scaling with world size (dotted: ideal)", 640, margin={"t": 110}))
    fig.update_annotations(font={"size": 13})
    rows = [([Cell(e["run"])] if ctx.multi_run else []) + [
        Cell(str(e.get("group", ""))), Cell(str(e.get("mode", ""))), Cell(str(e.get("scaling", ""))),
        num(e["world_size"], 0), num(e.get("throughput")), num(e.get("speedup"), 2), num(_pct(e.get("efficiency"))),
        Cell(fmt_value(e.get("case_id")))] for e in entries]
    columns = ([Column("run")] if ctx.multi_run else []) + [
        Column("group"), Column("mode"), Column("scaling", help="weak: batch per process fixed; strong: total fixed"),
        Column("world size", True), Column("throughput (samples/s)", True), Column("speed-up (x)", True),
        Column("efficiency (%)", True, "speed-up / world size"), Column("case")]
    return View("scaling", "Scaling", "Throughput and parallel efficiency (speed-up over the smallest world size, "
                "divided by the number of processes) for DP, DDP and FSDP; the dotted lines are perfect scaling.",
                [embed(ctx, fig), Table(ctx.new_id("table"), columns, rows)])


def _pct(value: Any) -> float | None:
    f = as_float(value)
    return f * 100 if f is not None else None
