"""The Anatomy view: where a training step's time goes (data, forward, loss, backward, optimizer,
the rest) and what a process's memory holds (parameters, gradients, optimizer state,
activations), from the always-on ``anatomy`` and ``memory_breakdown`` collectors.

The first half of this module is plain arithmetic on the records (the step's parts, the sentence
saying what dominates, the one-line summary ``bench run`` prints); the Scaling view and the
terminal use it too, so that all three say the same thing in the same words. (plotly is imported
only where a figure is made.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.records import AnatomyRecord, MemoryBreakdownRecord, MemoryCategories, PhaseTimes
from bench.report.figures import COLORWAY, bar_height, data_json, embed, esc, layout, rnd, rnd_all
from bench.report.model import Block, Bullets, CaseRow, Cell, Column, Context, Switcher, Table, View, num

MIB = 1024 * 1024
MAX_SENTENCES = 12  # cases described in words; the table holds every case
MAX_RANK_FIGURES = 200  # distributed cases with a per-rank figure: each carries its own bars

# ---------------------------------------------------------------------------------------------
# The records as parts of a whole


@dataclass(frozen=True)
class Segment:
    """One part of a step as drawn: ``key`` is the same for every case (one chart trace per key)."""

    key: str
    name: str
    short: str
    ms: float


# Trace order, left to right on a bar: the order a step runs in.
SEGMENT_KEYS = ("data", "forward", "loss", "backward", "exposed", "optimizer", "other")
SEGMENT_NAMES = {"data": "data", "forward": "forward", "loss": "loss", "backward": "backward",
                 "exposed": "exposed communication", "optimizer": "optimizer", "other": "other"}


def phase_list(p: PhaseTimes) -> list[Segment]:
    """The six measured phases, backward whole (communication it waited for included)."""
    return [Segment("data", "data", "data", p.data_ms), Segment("forward", "forward", "fwd", p.forward_ms),
            Segment("loss", "loss", "loss", p.loss_ms), Segment("backward", "backward", "bwd", p.backward_ms),
            Segment("optimizer", "optimizer", "opt", p.optimizer_ms), Segment("other", "other", "other", p.other_ms)]


def exposed_ms(p: PhaseTimes) -> float | None:
    """The communication backward waited for, or None for one process. It is measured as a
    difference of two kinds of steps, so noise can push it past backward itself: capped there, so
    that the parts still add up to the step."""
    if p.exposed_communication_ms is None:
        return None
    return min(p.exposed_communication_ms, p.backward_ms)


def segments(p: PhaseTimes) -> list[Segment]:
    """The step's parts in running order, adding up to ``step_ms``: where exposed communication
    was measured, backward is split into its compute and the communication it did not hide."""
    exposed = exposed_ms(p)
    out = []
    for s in phase_list(p):
        if s.key == "backward" and exposed is not None:
            out.append(Segment("backward", "backward compute", "bwd compute", s.ms - exposed))
            out.append(Segment("exposed", SEGMENT_NAMES["exposed"], "exposed comm", exposed))
        else:
            out.append(s)
    return out


def share(ms: float, p: PhaseTimes) -> float:
    """A part's fraction of the step."""
    return ms / p.step_ms


def pct(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"


def rank_skew(anatomy: AnatomyRecord) -> float | None:
    """How much longer the slowest rank's step is than the fastest's (0.12 = 12%), or None
    for one process."""
    steps = [r.step_ms for r in anatomy.ranks or []]
    return max(steps) / min(steps) - 1 if len(steps) > 1 else None


def dominance(p: PhaseTimes) -> str:
    """What dominates the step, in words: ``backward is 58% of the step, forward 31%; exposed
    communication 21%``."""
    ranked = sorted(phase_list(p), key=lambda s: s.ms, reverse=True)
    text = f"{ranked[0].name} is {pct(share(ranked[0].ms, p))} of the step"
    if ranked[1].ms > 0:
        text += f", {ranked[1].name} {pct(share(ranked[1].ms, p))}"
    exposed = exposed_ms(p)
    if exposed is not None:
        text += f"; exposed communication {pct(share(exposed, p))}"
    return text


@dataclass(frozen=True)
class MemoryPart:
    name: str
    short: str
    mib: float


def memory_parts(c: MemoryCategories) -> list[MemoryPart]:
    """The categories that were measured, in MiB (activations and the rest may be unknown)."""
    parts = [("parameters", "params", c.parameters_bytes), ("gradients", "grads", c.gradients_bytes),
             ("optimizer state", "opt", c.optimizer_state_bytes), ("activations", "act", c.activations_bytes),
             ("other", "other", c.other_bytes)]
    return [MemoryPart(name, short, value / MIB) for name, short, value in parts if value is not None]


def mib(value: float) -> str:
    """MiB in a sentence: three significant digits, no exponent for large values, and a bound for
    a few bytes (``0.00187 MiB`` of "other" reads as a measurement error, not as nothing)."""
    if 0 < value < 0.01:
        return "<0.01"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def memory_sentence(c: MemoryCategories) -> str:
    """The largest category, in words: ``activations are the largest part of memory (40 of 90 MiB
    at the peak)``."""
    top = max(memory_parts(c), key=lambda m: m.mib)
    total = c.peak_bytes / MIB if c.peak_bytes is not None else sum(m.mib for m in memory_parts(c))
    verb = "is" if top.name in ("optimizer state", "other") else "are"
    where = "at the peak" if c.peak_bytes is not None else "measured"
    return f"{top.name} {verb} the largest part of memory ({mib(top.mib)} of {mib(total)} MiB {where})"


def usable_anatomy(record: AnatomyRecord | None) -> AnatomyRecord | None:
    """The record where it holds phases (not an error, not a collector that did not run)."""
    return record if record is not None and record.error is None and record.phases is not None else None


def usable_memory(record: MemoryBreakdownRecord | None) -> MemoryBreakdownRecord | None:
    return record if record is not None and record.error is None and record.categories is not None else None


def one_line(anatomy: AnatomyRecord | None, memory: MemoryBreakdownRecord | None) -> str | None:
    """The anatomy of a case in one line for the terminal, or None when it has neither record:
    ``anatomy: data 2% · fwd 31% · loss 1% · bwd 52% (exposed comm 12%) · opt 9% · other 5% ·
    mem 12.3 MiB params, 12.3 MiB grads, 24.6 MiB opt, 40 MiB act``."""
    anatomy, memory = usable_anatomy(anatomy), usable_memory(memory)
    parts = []
    if anatomy is not None and anatomy.phases is not None:
        p = anatomy.phases
        exposed = exposed_ms(p)
        for s in phase_list(p):
            text = f"{s.short} {pct(share(s.ms, p))}"
            if s.key == "backward" and exposed is not None:
                text += f" (exposed comm {pct(share(exposed, p))})"
            parts.append(text)
    if memory is not None and memory.categories is not None:
        # Categories of no bytes (no optimizer state under plain SGD) say nothing in one line.
        held = [f"{mib(m.mib)} MiB {m.short}" for m in memory_parts(memory.categories) if m.mib > 0]
        if held:
            parts.append("mem " + ", ".join(held))
    return "anatomy: " + " · ".join(parts) if parts else None


# ---------------------------------------------------------------------------------------------
# The view

# One colour per part, the same in every chart of the page: compute in blues and greens,
# communication in the warning orange, the rest grey.
SEGMENT_COLOURS = {"data": COLORWAY[4], "forward": COLORWAY[0], "loss": COLORWAY[6], "backward": COLORWAY[2],
                   "exposed": COLORWAY[5], "optimizer": COLORWAY[3], "other": COLORWAY[8]}
MEMORY_COLOURS = {"parameters": COLORWAY[0], "gradients": COLORWAY[2], "optimizer state": COLORWAY[3],
                  "activations": COLORWAY[1], "other": COLORWAY[8]}


def anatomy_of(r: CaseRow) -> AnatomyRecord | None:
    return usable_anatomy(r.case.collectors.anatomy)


def memory_of(r: CaseRow) -> MemoryBreakdownRecord | None:
    return usable_memory(r.case.collectors.memory_breakdown)


def label(r: CaseRow, multi_run: bool) -> str:
    return f"{r.run} · {r.id}" if multi_run else r.id


def phase_traces(labels: Sequence[str], phases: Sequence[PhaseTimes], *, orientation: str = "h",
                 xaxis: str = "x", yaxis: str = "y", legend: bool = True) -> list[dict[str, Any]]:
    """Stacked bars of the step's parts, one trace per part, one bar per label, as plotly.js data.
    The hover gives each part's ms and share of the step; on exposed communication, also all the
    communication in flight (most of it hidden behind backward's compute)."""
    split = any(exposed_ms(p) is not None for p in phases)
    traces = []
    for key in SEGMENT_KEYS:
        per_bar = [next((s for s in segments(p) if s.key == key), None) for p in phases]
        if all(s is None for s in per_bar):
            continue
        name = "backward compute" if key == "backward" and split else SEGMENT_NAMES[key]
        values = rnd_all(s.ms if s is not None else None for s in per_bar)
        custom = [[rnd(share(s.ms, p) * 100, 3) if s is not None else None, esc(s.name if s is not None else name),
                   rnd(p.communication_ms), rnd(p.step_ms)] for s, p in zip(per_bar, phases, strict=True)]
        value_axis = "x" if orientation == "h" else "y"
        hover = (f"%{{customdata[1]}}: %{{{value_axis}:,.3g}} ms (%{{customdata[0]:.1f}}% of the "
                 f"%{{customdata[3]:,.3g}} ms step)")
        if key == "exposed":
            hover += "<br>communication in flight: %{customdata[2]:,.3g} ms per step"
        category = [esc(text) for text in labels]
        traces.append({"type": "bar", "orientation": orientation, "name": esc(name), "legendgroup": key,
                       "showlegend": legend, "marker": {"color": SEGMENT_COLOURS[key]},
                       "x": values if orientation == "h" else category,
                       "y": category if orientation == "h" else values,
                       "xaxis": xaxis, "yaxis": yaxis, "customdata": custom,
                       "hovertemplate": f"%{{{'y' if orientation == 'h' else 'x'}}}<br>{hover}<extra></extra>"})
    return traces


def memory_traces(labels: Sequence[str], categories: Sequence[MemoryCategories], *, xaxis: str = "x",
                  yaxis: str = "y", legend: bool = True) -> list[dict[str, Any]]:
    """Stacked horizontal bars of memory by category (MiB), with each bar's peak as a tick."""
    names = list(dict.fromkeys(m.name for c in categories for m in memory_parts(c)))
    category = [esc(text) for text in labels]
    traces = []
    for name in names:
        per_bar = [next((m for m in memory_parts(c) if m.name == name), None) for c in categories]
        whole = [c.peak_bytes / MIB if c.peak_bytes else sum(m.mib for m in memory_parts(c)) or None
                 for c in categories]
        custom = [[rnd(m.mib / w * 100, 3) if m is not None and w else None] for m, w in zip(per_bar, whole, strict=True)]
        traces.append({"type": "bar", "orientation": "h", "name": esc(name), "legendgroup": f"mem-{name}",
                       "showlegend": legend, "marker": {"color": MEMORY_COLOURS[name]},
                       "x": rnd_all(m.mib if m is not None else None for m in per_bar), "y": category,
                       "xaxis": xaxis, "yaxis": yaxis, "customdata": custom,
                       "hovertemplate": f"%{{y}}<br>{esc(name)}: %{{x:,.4g}} MiB (%{{customdata[0]:.1f}}% of the "
                                        "peak)<extra></extra>"})
    peaks = [c.peak_bytes / MIB if c.peak_bytes is not None else None for c in categories]
    if any(v is not None for v in peaks):
        traces.append({"type": "scatter", "mode": "markers", "name": "peak", "legendgroup": "mem-peak",
                       "showlegend": legend, "marker": {"symbol": "line-ns-open", "size": 18, "color": "#000",
                                                        "line": {"width": 2}},
                       "x": rnd_all(peaks), "y": category, "xaxis": xaxis, "yaxis": yaxis,
                       "hovertemplate": "%{y}<br>peak of live tensors: %{x:,.4g} MiB<extra></extra>"})
    return traces


def _figure(traces: list[dict[str, Any]], title: str, axis_title: str, n_bars: int) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(data=traces)
    fig.update_layout(layout(title, bar_height(n_bars), barmode="stack"))
    fig.update_xaxes(title_text=axis_title, rangemode="tozero")
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def rank_label(rank: int, slowest: int | None) -> str:
    return f"rank {rank} (slowest)" if rank == slowest else f"rank {rank}"


def _rank_figures(ctx: Context, rows: Sequence[CaseRow]) -> Switcher | None:
    """Per distributed case, one bar per rank: phases on the left, memory on the right, the
    slowest rank named on its bar (it sets the pace of every rank's step)."""
    from plotly.subplots import make_subplots

    cases = []
    for r in rows:
        anatomy, memory = anatomy_of(r), memory_of(r)
        ranks = anatomy.ranks if anatomy is not None and anatomy.ranks and len(anatomy.ranks) > 1 else []
        mem_ranks = memory.ranks if memory is not None and memory.ranks and len(memory.ranks) > 1 else []
        if ranks or mem_ranks:
            cases.append((r, anatomy, ranks, mem_ranks))
    if not cases:
        return None
    shown = cases[:MAX_RANK_FIGURES]
    most = max(max(len(ranks), len(mem)) for _, _, ranks, mem in shown)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12)
    fig.update_xaxes(title_text="ms per step", rangemode="tozero", row=1, col=1)
    fig.update_xaxes(title_text="MiB", rangemode="tozero", row=1, col=2)
    fig.update_yaxes(type="category", autorange="reversed")
    fig.update_layout(layout("", bar_height(most, extra=160), barmode="stack"))
    base: dict[str, Any] = fig.to_plotly_json()["layout"]
    figures = []
    for r, anatomy, ranks, mem_ranks in shown:
        slowest = anatomy.slowest_rank if anatomy is not None else None
        data = phase_traces([rank_label(k.rank, slowest) for k in ranks], ranks) if ranks else []
        data += memory_traces([rank_label(k.rank, slowest) for k in mem_ranks], mem_ranks, xaxis="x2", yaxis="y2")
        title = f"Per rank: {esc(label(r, ctx.multi_run))}"
        skew = rank_skew(anatomy) if anatomy is not None else None
        if skew is not None:
            title += f" (slowest rank's step {skew * 100:.1f}% longer than the fastest's)"
        overrides: dict[str, Any] = {"title": {"text": title}}
        # A case with only one of the two per-rank records gives its panel the whole width.
        if not ranks or not mem_ranks:
            shown_axis, hidden = ("xaxis2", "") if not ranks else ("xaxis", "2")
            overrides[shown_axis] = {**base[shown_axis], "domain": [0, 1]}
            overrides[f"xaxis{hidden}"] = overrides[f"yaxis{hidden}"] = {"visible": False}
        figures.append({"data": data, "layout": overrides})
    caption = "" if len(cases) == len(shown) else f"The first {len(shown)} of {len(cases)} distributed cases."
    return Switcher(ctx.new_id("switch"), "distributed case", [label(r, ctx.multi_run) for r, *_ in shown],
                    data_json({"layout": base, "figures": figures}), int(base["height"]), caption=caption)


def case_sentence(r: CaseRow, multi_run: bool) -> str:
    """One case in words: what dominates its step and its memory, and the slowest rank."""
    anatomy, memory = anatomy_of(r), memory_of(r)
    parts = []
    head = label(r, multi_run)
    if anatomy is not None and anatomy.phases is not None:
        # The step's length goes with the case's name: after "exposed communication 17%" it would
        # read as that part's length.
        head += f" ({anatomy.phases.step_ms:,.3g} ms per step)"
        parts.append(dominance(anatomy.phases))
        skew = rank_skew(anatomy)
        if skew is not None and anatomy.slowest_rank is not None:
            parts.append(f"rank {anatomy.slowest_rank} is the slowest, its step {skew * 100:.0f}% longer than "
                         "the fastest rank's" if skew >= 0.005 else "the ranks' steps are within 0.5% of each other")
    if memory is not None and memory.categories is not None:
        parts.append(memory_sentence(memory.categories))
    return f"{head}: " + "; ".join(parts) + "."


def _table(ctx: Context, rows: Sequence[CaseRow]) -> Table:
    body = []
    for r in rows:
        anatomy, memory = anatomy_of(r), memory_of(r)
        p = anatomy.phases if anatomy is not None else None
        measured = anatomy.measured_step_ms if anatomy is not None else None
        ratio = p.step_ms / measured if p is not None and measured else None
        skew = rank_skew(anatomy) if anatomy is not None else None
        peak = memory.categories.peak_bytes if memory is not None and memory.categories is not None else None
        top = max(phase_list(p), key=lambda s: s.ms) if p is not None else None
        notes = [*(anatomy.notes if anatomy is not None else []), *(memory.notes if memory is not None else [])]
        body.append(([Cell(r.run)] if ctx.multi_run else []) + [
            Cell(r.id), num(p.step_ms if p else None, 2), num(measured, 2), num(ratio, 2),
            Cell(f"{top.name} {pct(share(top.ms, p))}" if top is not None and p is not None else ""),
            num(p.communication_ms if p else None, 2), num(exposed_ms(p) if p else None, 2),
            Cell("" if anatomy is None or anatomy.slowest_rank is None else str(anatomy.slowest_rank)),
            num(skew * 100 if skew is not None else None), num(anatomy.cost_s if anatomy else None, 2),
            num(peak / MIB if peak is not None else None), Cell("; ".join(notes))])
    columns = ([Column("run")] if ctx.multi_run else []) + [
        Column("case"), Column("anatomy step (ms)", True, "the sum of the phases, a mean over the anatomy's steps"),
        Column("measured step (ms)", True, "the measured region's median step"),
        Column("anatomy / measured (x)", True, "near 1 when the extra steps ran like the measured ones"),
        Column("largest phase"), Column("communication (ms)", True, "collectives in flight per step"),
        Column("exposed communication (ms)", True, "the communication backward waited for"),
        Column("slowest rank"), Column("rank skew (%)", True, "slowest rank's step over the fastest's, minus 1"),
        Column("anatomy cost (s)", True, "wall time the anatomy's extra steps added to the case"),
        Column("peak memory (MiB)", True), Column("notes")]
    return Table(ctx.new_id("table"), columns, body, caption="Anatomy against the measured step")


def build(ctx: Context) -> View | None:
    rows = [r for r in ctx.rows if anatomy_of(r) is not None or memory_of(r) is not None]
    if not rows:
        return None
    blocks: list[Block] = []
    sentences = [case_sentence(r, ctx.multi_run) for r in rows[:MAX_SENTENCES]]
    if len(rows) > MAX_SENTENCES:
        sentences.append(f"And {len(rows) - MAX_SENTENCES} more cases: their largest phase is in the table.")
    blocks.append(Bullets("What dominates", sentences, cls="findings"))
    timed = [(label(r, ctx.multi_run), a.phases) for r in rows if (a := anatomy_of(r)) and a.phases]
    held = [(label(r, ctx.multi_run), m.categories) for r in rows if (m := memory_of(r)) and m.categories]
    for parts, traces, title, unit in ((timed, phase_traces, "Where a step's time goes", "ms per step"),
                                       (held, memory_traces, "What memory holds (one process)", "MiB")):
        if parts:
            names, values = zip(*parts, strict=True)
            blocks.append(embed(ctx, _figure(traces(names, values), title, unit, len(parts))))
    per_rank = _rank_figures(ctx, rows)
    if per_rank is not None:
        blocks.append(per_rank)
    blocks.append(_table(ctx, rows))
    return View("anatomy", "Anatomy", "Where each case's training step spends its time and what its memory holds, "
                "measured on extra steps after the measured region (never inside it). Under DDP and FSDP, "
                "backward is split into its compute and the communication it did not hide.", blocks)
