"""The Scaling view: throughput and parallel efficiency against world size, DP, DDP and FSDP side by
side, from the ``scaling`` list that a run with several world sizes adds to its results; and, where
the cases carry an anatomy, what each world size's step is made of, so that a falling efficiency
has a visible cause (DDP's exposed communication growing, DataParallel's forward growing with its
scatter and gather)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.labels import fmt_value
from bench.records import AnatomyRecord
from bench.report.anatomy import anatomy_of, exposed_ms, pct, phase_traces, rank_skew, segments, share
from bench.report.figures import COLORWAY, embed, esc, layout, rnd, rnd_all
from bench.report.model import Block, Bullets, Cell, Column, Context, Table, View, as_float, num
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


def _modes(entries: Sequence[dict[str, Any]]) -> list[str]:
    modes = [m for m in MODE_ORDER if any(e.get("mode") == m for e in entries)]
    return modes + sorted({str(e.get("mode")) for e in entries} - set(modes))


def build(ctx: Context) -> View | None:
    from plotly.subplots import make_subplots

    entries = _entries(ctx)
    if not entries:
        return None
    modes = _modes(entries)
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
    anatomies = _anatomies(ctx, entries)
    rows = [([Cell(e["run"])] if ctx.multi_run else []) + [
        Cell(str(e.get("group", ""))), Cell(str(e.get("mode", ""))), Cell(str(e.get("scaling", ""))),
        num(e["world_size"], 0), num(e.get("throughput")), num(e.get("speedup"), 2), num(_pct(e.get("efficiency"))),
        *(_anatomy_cells(anatomies.get(_key(e))) if anatomies else []), Cell(fmt_value(e.get("case_id")))] for e in entries]
    columns = ([Column("run")] if ctx.multi_run else []) + [
        Column("group"), Column("mode"), Column("scaling", help="weak: batch per process fixed; strong: total fixed"),
        Column("world size", True), Column("throughput (samples/s)", True), Column("speed-up (x)", True),
        Column("efficiency (%)", True, "speed-up / world size")]
    if anatomies:
        columns += [Column("anatomy step (ms)", True, "the sum of the phases (the slowest rank's)"),
                    Column("exposed communication (ms)", True, "the communication backward waited for"),
                    Column("rank skew (%)", True, "slowest rank's step over the fastest's, minus 1")]
    columns.append(Column("case"))
    blocks: list[Block] = [embed(ctx, fig)]
    if anatomies:
        blocks += [Bullets("Where the step's time went as processes were added", _growth(entries, anatomies)),
                   embed(ctx, _anatomy_figure(ctx, entries, anatomies))]
    blocks.append(Table(ctx.new_id("table"), columns, rows))
    return View("scaling", "Scaling", "Throughput and parallel efficiency (speed-up over the smallest world size, "
                "divided by the number of processes) for DP, DDP and FSDP; the dotted lines are perfect scaling."
                + (" Below, each world size's step anatomy." if anatomies else ""), blocks)


# ---------------------------------------------------------------------------------------------
# Step anatomy per world size


def _key(entry: dict[str, Any]) -> tuple[str, str]:
    return entry["run"], str(entry.get("case_id"))


def _anatomies(ctx: Context, entries: Sequence[dict[str, Any]]) -> dict[tuple[str, str], AnatomyRecord]:
    """The anatomy of each scaling entry's case (found by run and case id), where it has one."""
    by_case = {(r.run, r.id): a for r in ctx.rows if (a := anatomy_of(r)) is not None}
    return {_key(e): by_case[_key(e)] for e in entries if _key(e) in by_case}


def _anatomy_cells(anatomy: AnatomyRecord | None) -> list[Cell]:
    if anatomy is None or anatomy.phases is None:
        return [Cell(""), Cell(""), Cell("")]
    skew = rank_skew(anatomy)
    return [num(anatomy.phases.step_ms, 2), num(exposed_ms(anatomy.phases), 2),
            num(skew * 100 if skew is not None else None)]


def _anatomy_figure(ctx: Context, entries: Sequence[dict[str, Any]],
                    anatomies: dict[tuple[str, str], AnatomyRecord]) -> Any:
    """A column per mode, a stacked bar per world size (per group and world size where a run has
    several groups): the step's parts in ms, so a growing part stands out beside its neighbours."""
    from plotly.subplots import make_subplots

    modes = [m for m in _modes(entries) if any(e.get("mode") == m and _key(e) in anatomies for e in entries)]
    several = len({e["series"] for e in entries if _key(e) in anatomies}) > 1
    fig = make_subplots(rows=1, cols=len(modes), shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=[f"{esc(m).upper()}: step anatomy" for m in modes])
    for col, mode in enumerate(modes, start=1):
        points = sorted((e for e in entries if e.get("mode") == mode and _key(e) in anatomies),
                        key=lambda e: (e["series"], e["world_size"]))
        labels = [f"{e['series']} · {e['world_size']}" if several else str(e["world_size"]) for e in points]
        phases = [p for e in points if (p := anatomies[_key(e)].phases) is not None]
        axis = "" if col == 1 else str(col)
        for trace in phase_traces(labels, phases, orientation="v", xaxis=f"x{axis}", yaxis=f"y{axis}",
                                  legend=col == 1):
            fig.add_trace(trace)
        fig.update_xaxes(title_text="world size (processes)" if not several else None, type="category",
                         row=1, col=col)
    fig.update_yaxes(title_text="ms per step", rangemode="tozero", row=1, col=1)
    # The legend sits above the panels' titles, not on them.
    fig.update_layout(layout("Step anatomy per world size (the slowest rank's step)", 480, barmode="stack",
                             margin={"t": 120}, legend={"y": 1.12}))
    fig.update_annotations(font={"size": 13})
    return fig


def _growth(entries: Sequence[dict[str, Any]], anatomies: dict[tuple[str, str], AnatomyRecord]) -> list[str]:
    """Per group and mode, from its smallest world size to its largest: how the step changed and
    which part changed most, in ms and as a share of the step, and the rank skew at the largest."""
    sentences = []
    for series in dict.fromkeys(e["series"] for e in entries):
        for mode in _modes(entries):
            points = sorted((e for e in entries if e["series"] == series and e.get("mode") == mode
                             and _key(e) in anatomies), key=lambda e: e["world_size"])
            if len(points) < 2:
                continue
            first, last = anatomies[_key(points[0])], anatomies[_key(points[-1])]
            if first.phases is None or last.phases is None:
                continue
            before = {s.key: s.ms for s in segments(first.phases)}
            after = {s.key: s for s in segments(last.phases)}
            # A part absent at the smallest size (exposed communication of one process) was zero there.
            grown = max(after.values(), key=lambda s: s.ms - before.get(s.key, 0.0))
            delta = grown.ms - before.get(grown.key, 0.0)
            n0, n1 = points[0]["world_size"], points[-1]["world_size"]
            text = (f"{mode.upper()} · {series}: the step is {first.phases.step_ms:,.3g} ms at world size {n0} and "
                    f"{last.phases.step_ms:,.3g} ms at {n1}; ")
            name = "backward" if grown.name == "backward compute" else grown.name
            if delta > 0:
                text += (f"{name} grew most (+{delta:,.3g} ms, {pct(share(grown.ms, last.phases))} of the step "
                         f"at {n1})")
                if mode == "dp" and grown.key == "forward":
                    text += ": DataParallel scatters the batch, replicates the model and gathers the outputs in forward"
            else:
                text += "no part of it grew"
            skew = rank_skew(last)
            if skew is not None and last.slowest_rank is not None:
                # Below half a percent "the slowest" is noise: say the ranks kept pace instead.
                text += (f"; at {n1}, rank {last.slowest_rank} is the slowest, {skew * 100:.0f}% behind the fastest"
                         if skew >= 0.005 else f"; at {n1}, the ranks' steps are within 0.5% of each other")
            sentences.append(text + ".")
    return sentences


def _pct(value: Any) -> float | None:
    f = as_float(value)
    return f * 100 if f is not None else None
