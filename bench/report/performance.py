"""Throughput and step-time views: how fast each case trained and how steady each step was."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.report.figures import (
    COLORWAY,
    MAX_HEIGHT,
    ROW_PX,
    THEME,
    bar_height,
    ci_errors,
    embed,
    esc,
    layout,
    rnd,
    rnd_all,
)
from bench.report.model import Block, CaseRow, Context, Note, View, axis_order, interval_caption, varying_axes

THROUGHPUT_AXIS = "throughput (samples/s)"
MAX_FACETS = 24  # more panels than this is a wall, not small multiples
# Medians further apart than this on one axis leave the slower cases as slivers beside the fastest.
SCALE_SPREAD = 10.0
PANEL_EXTRA = 40  # px of a panel besides its bars: its title and x ticks


def _measured(ctx: Context) -> list[CaseRow]:
    return [r for r in ctx.rows if r.status == "ok" and r.throughput is not None]


def _series_key(r: CaseRow, axes: Sequence[str], multi_run: bool) -> str:
    """A bar's label from several parameters; bare numbers get their name (``batch_size=64``)."""
    parts = [r.run] if multi_run else []
    for a in axes:
        value = r.params.get(a)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        parts.append(f"{a}={r.labels[a]}" if numeric else r.labels[a])
    return " · ".join(parts)


def spread(rows: Sequence[CaseRow]) -> float:
    """The fastest median over the slowest: how many times apart the cases on one axis are."""
    medians = [t[0] for r in rows if (t := r.throughput) is not None]
    return max(medians) / min(medians) if medians else 1.0


def panel_axis(rows: Sequence[CaseRow], axes: Sequence[str]) -> str | None:
    """The swept parameter to give each value its own panel when medians differ by more than
    ``SCALE_SPREAD`` (an MLP at 60,000 samples/s would squeeze a ResNet at 300 into a sliver): the
    one whose values hold cases closest in scale (the model, usually). None when one axis suits all."""
    if spread(rows) <= SCALE_SPREAD or not axes:
        return None

    def worst(axis: str) -> float:
        groups: dict[str, list[CaseRow]] = {}
        for r in rows:
            groups.setdefault(r.labels[axis], []).append(r)
        return max(spread(g) for g in groups.values())

    return min(axes, key=worst)  # the first in the suite's order on a tie


def build_throughput(ctx: Context) -> View | None:
    rows = _measured(ctx)
    if not rows:
        return None
    axes = varying_axes(rows)
    panel = panel_axis(rows, axes)
    caption = ("" if panel is None else f"One panel per {panel}, each with its own x axis: the medians differ "
               f"{spread(rows):,.0f}x, too much for one axis.")
    view = View("throughput", "Throughput",
                "Median samples per second with its 95% interval as error bars, grouped by each parameter the "
                "suite sweeps.")
    view.blocks.append(Note(interval_caption(rows, ctx.multi_run), cls="intervals"))
    if not axes:
        view.blocks.append(embed(ctx, _bars(rows, None, [], ctx.multi_run, "Throughput per case"), caption))
        return view
    for axis in axes:
        rest = [a for a in axes if a not in (axis, panel)]
        title = f"Throughput by {esc(axis)}"
        fig = (_bars(rows, axis, rest, ctx.multi_run, title) if panel is None
               else _paneled_bars(rows, axis, rest, panel, ctx.multi_run, title))
        view.blocks.append(embed(ctx, fig, caption))
    # With panels per scale the charts above are already small multiples of that parameter.
    if len(axes) >= 2 and panel is None:
        view.blocks.append(_small_multiples(ctx, rows, axes))
    return view


Bars = list[tuple[str, list[tuple[str, CaseRow]]]]


def _grouped(rows: Sequence[CaseRow], axis: str | None, rest: list[str], multi_run: bool) -> tuple[list[str], Bars]:
    """The categories (rows of the chart: one per combination of the other parameters) and, per
    value of ``axis`` (one colour each), its bars as (category, case)."""
    if axis is None:
        keys = [(r.id, r.run if multi_run else "") for r in rows]
        groups = list(dict.fromkeys(k[1] for k in keys))
    else:
        keys = [(_series_key(r, rest, multi_run) or r.labels[axis], r.labels[axis]) for r in rows]
        if len(set(keys)) < len(keys):  # labels coincide (an unusual parameter): fall back to case ids
            keys = [(f"{r.run} · {r.id}" if multi_run else r.id, r.labels[axis]) for r in rows]
        groups = axis_order(rows, axis)
    categories = list(dict.fromkeys(k[0] for k in keys))
    bars = [(group, [(k[0], r) for k, r in zip(keys, rows, strict=True) if k[1] == group]) for group in groups]
    return categories, [(group, members) for group, members in bars if members]


def hover_interval(members: Sequence[CaseRow]) -> str:
    """What the interval in a hover text covers (``customdata[2]`` holds the trial count)."""
    kinds = {r.trial_based for r in members}
    if kinds == {True}:
        return "over %{customdata[2]} trials in randomized rounds"
    if kinds == {False}:
        return "within one stretch (results version 1)"
    return "(what each run's interval covers: see the Summary)"


def _bar(group: str, members: list[tuple[str, CaseRow]], **extra: Any) -> Any:
    import plotly.graph_objects as go

    thr = [t for _, r in members if (t := r.throughput)]  # every measured row has one
    med = [t[0] for t in thr]
    return go.Bar(
        name=esc(group) if group else "throughput", orientation="h",
        y=[esc(k) for k, _ in members], x=rnd_all(med),
        error_x=ci_errors(med, [t[1] for t in thr], [t[2] for t in thr]),
        customdata=[[rnd(t[1]), rnd(t[2]), r.trial_count] for t, (_, r) in zip(thr, members, strict=True)],
        hovertemplate="%{y}<br>%{x:,.1f} samples/s<br>95% CI %{customdata[0]:,.1f} \u2013 "
                      f"%{{customdata[1]:,.1f}} {hover_interval([r for _, r in members])}"
                      "<extra>%{fullData.name}</extra>",
        **extra)


def _bars(rows: list[CaseRow], axis: str | None, rest: list[str], multi_run: bool, title: str) -> Any:
    """Horizontal grouped bars: one row per combination of the other parameters, one colour per
    value of ``axis``, so the values of the swept parameter sit side by side."""
    import plotly.graph_objects as go

    categories, bars = _grouped(rows, axis, rest, multi_run)
    fig = go.Figure([_bar(group, members) for group, members in bars])
    n_groups = len(fig.data)
    fig.update_layout(layout(
        title, bar_height(len(categories), n_groups), barmode="group", showlegend=n_groups > 1,
        legend_title_text=esc(axis) if axis else "run",
        xaxis={"title": {"text": THROUGHPUT_AXIS}, "rangemode": "tozero"},
        yaxis={"type": "category", "autorange": "reversed",
               "categoryorder": "array", "categoryarray": [esc(c) for c in categories]},
    ))
    return fig


def _paneled_bars(rows: list[CaseRow], axis: str, rest: list[str], panel: str, multi_run: bool, title: str) -> Any:
    """The grouped bars of ``_bars``, one panel per value of ``panel`` stacked, each panel with its
    own x axis (so every case's bar and interval are legible whatever its scale), colours shared."""
    from plotly.subplots import make_subplots

    values = axis_order(rows, panel)
    colours = {group: COLORWAY[i % len(COLORWAY)] for i, group in enumerate(axis_order(rows, axis))}
    panels = [_grouped([r for r in rows if r.labels[panel] == value], axis, rest, multi_run) for value in values]
    heights = [PANEL_EXTRA + len(categories) * max(ROW_PX, 9 * len(bars) + 8) for categories, bars in panels]
    gap = 70  # px between panels: room for the x ticks of one and the title of the next
    area = sum(heights) + gap * (len(panels) - 1)
    fig = make_subplots(rows=len(panels), cols=1, row_heights=[h / sum(heights) for h in heights],
                        vertical_spacing=gap / area if len(panels) > 1 else 0.0,
                        subplot_titles=[esc(f"{panel} = {value}") for value in values])
    seen: set[str] = set()
    for row, (categories, bars) in enumerate(panels, start=1):
        for group, members in bars:
            fig.add_trace(_bar(group, members, marker_color=colours[group], legendgroup=esc(group),
                               showlegend=group not in seen), row=row, col=1)
            seen.add(group)
        fig.update_yaxes(type="category", autorange="reversed", categoryorder="array",
                         categoryarray=[esc(c) for c in categories], row=row, col=1)
        fig.update_xaxes(rangemode="tozero", row=row, col=1)
    fig.update_xaxes(title_text=THROUGHPUT_AXIS, row=len(panels), col=1)
    fig.update_annotations(font={"size": 13})
    # The legend goes to the right: above the panels it would collide with the first panel's title.
    fig.update_layout(layout(title, int(min(MAX_HEIGHT, area + 150)), barmode="group", showlegend=len(seen) > 1,
                             legend={"title": {"text": esc(axis)}, "orientation": "v", "x": 1.02, "y": 1,
                                     "xanchor": "left", "yanchor": "top"}))
    return fig


def _small_multiples(ctx: Context, rows: list[CaseRow], axes: list[str]) -> Block:
    """One panel per value of the first swept parameter, each with its own x scale, colour = the
    second parameter (or the run)."""
    import pandas as pd
    import plotly.express as px

    facet = axes[0]
    colour = "run" if ctx.multi_run else axes[1]
    inner = [a for a in axes[1:] if a != colour]
    facets = axis_order(rows, facet)
    if len(facets) > MAX_FACETS:
        return Note(f"{len(facets)} values of {facet}: too many for small multiples; see the charts above.")
    data = []
    for r in rows:
        med, lo, hi = r.throughput or (0.0, 0.0, 0.0)
        colour_label = r.run if colour == "run" else r.labels[colour]
        data.append({"facet": esc(r.labels[facet]), "colour": esc(colour_label),
                     "y": esc(_series_key(r, inner, False) or colour_label),
                     "median": rnd(med), "plus": rnd(max(0.0, hi - med)), "minus": rnd(max(0.0, med - lo))})
    df = pd.DataFrame(data)
    wrap = min(3, len(facets))
    n_rows = -(-len(facets) // wrap)
    colours = df["colour"].nunique()
    per_panel = max(df.groupby("facet")["y"].nunique()) if len(df) else 1
    panel_height = bar_height(per_panel, colours, extra=60)
    fig = px.bar(df, x="median", y="y", color="colour", facet_col="facet", facet_col_wrap=wrap,
                 orientation="h", error_x="plus", error_x_minus="minus", barmode="group",
                 color_discrete_sequence=COLORWAY, template=THEME, category_orders={"facet": [esc(f) for f in facets]},
                 facet_row_spacing=min(0.08, 0.6 / n_rows), facet_col_spacing=0.12,
                 labels={"median": THROUGHPUT_AXIS, "y": "", "colour": esc(colour), "facet": esc(facet)})
    fig.update_traces(hovertemplate="%{y}<br>%{x:,.1f} samples/s<extra>%{fullData.name}</extra>")
    fig.update_xaxes(matches=None, showticklabels=True, rangemode="tozero")
    fig.update_yaxes(matches=None, showticklabels=True, autorange="reversed", title_text="")
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1], font={"size": 13}))
    # The legend goes to the right: above the panels it would collide with their titles.
    fig.update_layout(layout(f"Throughput: small multiples by {esc(facet)}", min(20_000, 110 + n_rows * panel_height),
                             legend={"title": {"text": esc(colour)}, "orientation": "v", "x": 1.02, "y": 1,
                                     "xanchor": "left", "yanchor": "top"}))
    return embed(ctx, fig, caption=f"One panel per {facet}; colour: {colour}. Each panel has its own scale; "
                                   "error bars: 95% intervals as in the charts above.")


def _box_stats(samples: Sequence[float]) -> dict[str, float] | None:
    """Quartiles and Tukey fences, computed here so the page carries six numbers per case, not every
    step time."""
    import numpy as np

    values = np.asarray([s for s in samples if s is not None], dtype=float)
    if values.size == 0:
        return None
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    iqr = q3 - q1
    inside = values[(values >= q1 - 1.5 * iqr) & (values <= q3 + 1.5 * iqr)]
    return {"q1": q1, "median": median, "q3": q3, "lowerfence": inside.min(), "upperfence": inside.max(),
            "mean": values.mean(), "p95": float(np.percentile(values, 95)), "n": float(values.size)}


def build_step_time(ctx: Context) -> View | None:
    import plotly.graph_objects as go

    stats = [(r, _box_stats(r.samples.step_time_ms if r.samples is not None else [])) for r in ctx.rows]
    present = [(r, s) for r, s in stats if s is not None]
    if not present:
        return None
    categories = list(dict.fromkeys(r.id for r, _ in present))
    runs = list(dict.fromkeys(r.run for r, _ in present))
    fig = go.Figure()
    for run in runs:
        mine = [(r, s) for r, s in present if r.run == run]
        fig.add_box(
            name=esc(run) if ctx.multi_run else "step time", orientation="h", boxpoints=False,
            y=[esc(r.id) for r, _ in mine],
            **{k: rnd_all(s[k] for _, s in mine) for k in ("q1", "median", "q3", "lowerfence", "upperfence", "mean")},
            customdata=[[rnd(s["p95"]), int(s["n"])] for _, s in mine],
            hovertemplate="%{y}<br>median %{median:.2f} ms, p95 %{customdata[0]:.2f} ms<br>"
                          "%{customdata[1]} samples<extra></extra>",
        )
    fig.update_layout(layout(
        "Step time per case (box: quartiles; whiskers: 1.5 IQR)", bar_height(len(categories), len(runs)),
        boxmode="group", showlegend=ctx.multi_run, xaxis={"title": {"text": "step time (ms)"}},
        yaxis={"type": "category", "autorange": "reversed",
               "categoryorder": "array", "categoryarray": [esc(c) for c in categories]},
    ))
    return View("step-time", "Step time", "The distribution of single training-step times from the raw samples "
                "(where steps were timed per window, each sample is that window's mean step).",
                [embed(ctx, fig)])
