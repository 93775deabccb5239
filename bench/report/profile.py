"""The Profile view: the operators that took the most time in each profiled case, and links to
the traces and flame graphs the profilers saved next to the results."""

from __future__ import annotations

from typing import Any

from bench.records import PyspyRecord, TorchProfilerRecord
from bench.report.figures import bar_height, embed, esc, layout, rnd_all
from bench.report.model import Block, CaseRow, Cell, Column, Context, Section, Table, View, as_float, num

TOP_OPS = 15


def _number(value: Any) -> float:
    return as_float(value) or 0.0


# What each kind of saved file is, by the collector field that names it.
KINDS = {"traces": "torch profiler trace (open in Perfetto or chrome://tracing)",
         "flamegraph": "py-spy flame graph (SVG)", "speedscope": "py-spy profile (open in speedscope)"}


def _artifacts(r: CaseRow) -> list[tuple[str, str]]:
    """(kind, path relative to the results folder) for every file a profiler named."""
    found: list[tuple[str, str]] = []
    torch_prof = r.collector("torch_profiler")
    if isinstance(torch_prof, TorchProfilerRecord):
        found.extend((KINDS["traces"], trace) for trace in torch_prof.traces or [] if trace)
    pyspy = r.collector("pyspy")
    if isinstance(pyspy, PyspyRecord):
        found.extend((KINDS[key], path) for key, path in (("flamegraph", pyspy.flamegraph),
                                                          ("speedscope", pyspy.speedscope)) if path)
    # Under DDP every rank saves its own files; the record names the writing rank's above.
    named = {path for _, path in found}
    for rank in r.case.ranks or []:
        for path in rank.files:
            if path and path not in named:
                named.add(path)
                found.append((f"rank {rank.rank}: {_kind(path)}", path))
    return found


def _kind(path: str) -> str:
    """``ranks[].files`` lists paths only; the collectors name them with these endings."""
    if path.endswith(".svg"):
        return KINDS["flamegraph"]
    if path.endswith(".speedscope.json"):
        return KINDS["speedscope"]
    return KINDS["traces"]


def _top_ops(r: CaseRow) -> tuple[list[dict[str, Any]], str]:
    """The top operators, ordered by self CUDA time where any was recorded, else self CPU time."""
    record = r.collector("torch_profiler")
    ops = [op.model_dump() for op in record.top_ops or []] if isinstance(record, TorchProfilerRecord) else []
    key = "self_cuda_ms" if any(_number(op.get("self_cuda_ms")) > 0 for op in ops) else "self_cpu_ms"
    return sorted(ops, key=lambda op: -_number(op.get(key)))[:TOP_OPS], key


def build(ctx: Context) -> View | None:
    import plotly.graph_objects as go

    cases = [r for r in ctx.rows if _top_ops(r)[0] or _artifacts(r)]
    if not cases:
        return None
    blocks: list[Block] = []
    for i, r in enumerate(cases):
        ops, key = _top_ops(r)
        inner: list[Block] = []
        if ops:
            fig = go.Figure(go.Bar(
                orientation="h", y=[esc(op.get("name", "?")) for op in ops], x=rnd_all(_number(op.get(key)) for op in ops),
                marker_color="#0072B2", hovertemplate="%{y}<br>%{x:.3f} ms<extra></extra>"))
            unit = "self CUDA time (ms)" if key == "self_cuda_ms" else "self CPU time (ms)"
            fig.update_layout(layout(f"Top operators: {esc(r.id)}", bar_height(len(ops)),
                                     xaxis={"title": {"text": unit}},
                                     yaxis={"type": "category", "autorange": "reversed"}))
            inner.append(embed(ctx, fig))
            rows = [[Cell(str(op.get("name", "?"))), num(op.get("self_cpu_ms"), 3), num(op.get("self_cuda_ms"), 3),
                     num(op.get("calls"), 0)] for op in ops]
            inner.append(Table(ctx.new_id("table"), [Column("operator"), Column("self CPU (ms)", True),
                                                     Column("self CUDA (ms)", True), Column("calls", True)], rows))
        files = []
        for kind, path in _artifacts(r):
            href, exists = ctx.link(r.results_dir, path)
            files.append([Cell(kind), Cell(path, href=href, cls="" if exists else "missing",
                                           title="" if exists else "file not found when the report was built")])
        if files:
            inner.append(Table(ctx.new_id("table"), [Column("file"), Column("path")], files, caption="Saved files"))
        title = f"{r.run} · {r.id}" if ctx.multi_run else r.id
        blocks.append(Section(title, inner, open=i == 0))
    return View("profile", "Profile", "The operators with the most self time in each profiled case, and the "
                "traces and flame graphs saved with the results.", blocks)
