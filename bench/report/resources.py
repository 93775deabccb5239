"""Views of what the hardware did: memory, FLOPs and GPU telemetry over time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.records import NvmlRecord
from bench.report.figures import COLORWAY, bar_height, data_json, embed, esc, layout, rnd, rnd_all
from bench.report.model import Block, CaseRow, Cell, Column, Context, Switcher, Table, View, as_float, num

Getter = Callable[[CaseRow], float | None]
MAX_TELEMETRY_CASES = 100  # each case carries its own series; beyond this the page grows too large
MAX_POINTS = 600  # per series: more than a chart's width in pixels adds bytes, not detail
TELEMETRY_BUDGET = 30_000  # numbers in all series of all cases together (~180 kB of page)


def _panels(ctx: Context, title: str, panels: Sequence[tuple[str, Getter, str]]) -> Any:
    """Side-by-side horizontal bar panels sharing the case axis; one colour per run."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = [p for p in panels if any(p[1](r) is not None for r in ctx.rows)]
    cases = [r for r in ctx.rows if any(p[1](r) is not None for p in panels)]
    categories = list(dict.fromkeys(r.id for r in cases))
    runs = list(dict.fromkeys(r.run for r in cases))
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.04)
    for col, (axis_title, getter, tickformat) in enumerate(panels, start=1):
        for i, run in enumerate(runs):
            mine = [r for r in cases if r.run == run]
            fig.add_trace(go.Bar(
                name=esc(run), legendgroup=esc(run), showlegend=ctx.multi_run and col == 1, orientation="h",
                y=[esc(r.id) for r in mine], x=rnd_all(getter(r) for r in mine),
                marker_color=COLORWAY[i % len(COLORWAY)],
                hovertemplate=f"%{{y}}<br>%{{x:{tickformat or ',.1f'}}} {esc(axis_title)}<extra>{esc(run)}</extra>",
            ), row=1, col=col)
        fig.update_xaxes(title_text=esc(axis_title), tickformat=tickformat or None, rangemode="tozero",
                         row=1, col=col)
    fig.update_yaxes(type="category", autorange="reversed")
    # The other panels' y axes match the first (shared_yaxes), category list included: a thousand
    # case ids are carried once, not once per panel.
    fig.update_yaxes(categoryorder="array", categoryarray=[esc(c) for c in categories], row=1, col=1)
    fig.update_layout(layout(title, bar_height(len(categories), len(runs)), barmode="group",
                             showlegend=ctx.multi_run))
    return fig


def build_memory(ctx: Context) -> View | None:
    def metric(key: str, collected: str) -> Getter:
        # From the case's metrics, or else from the memory collector's record.
        return lambda r: (as_float(getattr(r.metrics, key, None)) or
                          as_float(getattr(r.collector("memory"), collected, None)))

    panels = [("host peak RSS (MiB)", metric("peak_rss_mb", "host_peak_rss_mb"), ""),
              ("CUDA peak allocated (MiB)", metric("cuda_peak_allocated_mb", "cuda_peak_allocated_mb"), ""),
              ("CUDA peak reserved (MiB)", metric("cuda_peak_reserved_mb", "cuda_peak_reserved_mb"), "")]
    if not any(p[1](r) is not None for p in panels for r in ctx.rows):
        return None
    fig = _panels(ctx, "Peak memory per case", panels)
    return View("memory", "Memory", "Peak resident memory of each case's process and, on CUDA, the peak memory "
                "allocated by tensors and reserved by PyTorch's caching allocator.", [embed(ctx, fig)])


def build_flops(ctx: Context) -> View | None:
    def field(key: str, scale: float = 1.0) -> Getter:
        def get(r: CaseRow) -> float | None:
            value = as_float(getattr(r.collector("flops"), key, None))
            return value * scale if value is not None else None
        return get

    rows = [r for r in ctx.rows if field("achieved_flops")(r) is not None or field("mfu")(r) is not None]
    if not rows:
        return None
    fig = _panels(ctx, "Achieved FLOP/s and model FLOPs utilisation",
                  [("achieved (FLOP/s)", field("achieved_flops"), "~s"), ("MFU (%)", field("mfu", 100), ".1f")])
    return View("flops", "FLOPs", "Floating-point operations per sample, the rate achieved while measuring, and "
                "model FLOPs utilisation (MFU: achieved over the device's peak); the Summary's table has "
                "the numbers.", [embed(ctx, fig)])


# ---------------------------------------------------------------------------------------------
# GPU telemetry

# A measured window's band. The rows share one time axis, so a band drawn against the first spans all.
BAND = {"type": "rect", "xref": "x", "yref": "paper", "y0": 0, "y1": 1, "fillcolor": "#0072B2", "opacity": 0.12,
        "line": {"width": 0}, "layer": "below"}
SERIES = (("util", "utilisation (%)"), ("power_w", "power (W)"), ("sm_clock_mhz", "SM clock (MHz)"),
          ("mem_used_mb", "memory used (MiB)"))


def _telemetry(r: CaseRow) -> NvmlRecord | None:
    record = r.collector("nvml")
    if not isinstance(record, NvmlRecord) or not (record.samples or {}).get("t"):
        return None
    return record


def _per_device(values: list[Any], n_times: int) -> list[list[Any]]:
    """Series may be flat (one device) or nested, per device or per time point."""
    if not values or not isinstance(values[0], list):
        return [values]
    if len(values) == n_times:  # one row per time point
        return [list(col) for col in zip(*values, strict=False)]
    return values


def measured_spans(starts: Sequence[float], lengths: Sequence[float]) -> list[tuple[float, float]]:
    """Timing windows merged where they touch: hundreds of back-to-back windows become one band."""
    spans: list[tuple[float, float]] = []
    for start, length in sorted(zip(starts, lengths, strict=False)):
        end = start + length
        if spans and start <= spans[-1][1] + 0.05 * length:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


def _axis_ids(row: int) -> tuple[str, str]:
    return ("x", "y") if row == 1 else (f"x{row}", f"y{row}")


def _telemetry_layout(present: list[tuple[str, str]]) -> dict[str, Any]:
    """The layout every case's telemetry shares (rows of series over a common time axis)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=len(present), cols=1, shared_xaxes=True, vertical_spacing=0.05)
    for row, (_, title) in enumerate(present, start=1):
        fig.update_yaxes(title_text=esc(title), rangemode="tozero", row=row, col=1)
    fig.update_xaxes(title_text="time since the first timed window (s)", row=len(present), col=1)
    fig.update_layout(layout("", 140 + 150 * len(present), hovermode="x unified"))
    plotly_json: dict[str, Any] = fig.to_plotly_json()["layout"]
    return plotly_json


def _telemetry_traces(r: CaseRow, record: NvmlRecord, present: list[tuple[str, str]],
                      max_points: int) -> dict[str, Any]:
    """One case's series and measured-window bands, as plotly.js data (no figure objects: building
    hundreds of validated figures would take seconds)."""
    samples = record.samples or {}
    times = samples["t"]
    step = max(1, -(-len(times) // max_points))
    devices = record.devices or []
    data = []
    for row, (key, title) in enumerate(present, start=1):
        xref, yref = _axis_ids(row)
        for d, series in enumerate(_per_device(samples.get(key) or [], len(times))):
            device = devices[d] if d < len(devices) and isinstance(devices[d], dict) else {}
            data.append({"type": "scatter", "mode": "lines", "xaxis": xref, "yaxis": yref,
                         "x": rnd_all(times[::step], 6), "y": rnd_all((as_float(v) for v in series[::step]), 4),
                         "name": esc(f"{d}: {device.get('name', f'GPU {d}')}"), "legendgroup": str(d),
                         "showlegend": row == 1, "line": {"width": 1.5, "color": COLORWAY[d % len(COLORWAY)]},
                         "hovertemplate": f"%{{y}} {esc(title)}<extra></extra>"})
    # Each band carries its ends only; the rest is the switcher's shared BAND (rounds of trials make
    # a band per trial).
    shapes = [{"x0": rnd(x0, 6), "x1": rnd(x1, 6)}
              for x0, x1 in measured_spans(r.samples.window_start_s if r.samples else [],
                                           r.samples.window_s if r.samples else [])]
    title = f"GPU telemetry: {esc(r.id)} (shaded: measured windows)"
    return {"data": data, "layout": {"title": {"text": title}, "shapes": shapes}}


def build_telemetry(ctx: Context) -> View | None:
    cases = [(r, rec) for r in ctx.rows if (rec := _telemetry(r)) is not None]
    if not cases:
        return None
    shown = cases[:MAX_TELEMETRY_CASES]
    present = [(key, title) for key, title in SERIES if any((rec.samples or {}).get(key) for _, rec in shown)]
    # A budget of numbers for the whole view keeps a 1,000-case page small; a few cases keep detail.
    max_points = max(50, min(MAX_POINTS, TELEMETRY_BUDGET // (len(shown) * (len(present) + 1))))
    base = _telemetry_layout(present)
    spec = {"layout": base, "shapes": [BAND],
            "figures": [_telemetry_traces(r, rec, present, max_points) for r, rec in shown]}
    caption = "" if len(cases) == len(shown) else f"The first {len(shown)} of {len(cases)} cases."
    blocks: list[Block] = [Switcher(
        ctx.new_id("switch"), "case", [f"{r.run} · {r.id}" if ctx.multi_run else r.id for r, _ in shown],
        data_json(spec), int(base["height"]), caption=caption)]
    keys: list[str] = []
    for _, rec in shown:
        keys.extend(k for k, v in (rec.summary or {}).items() if k not in keys and as_float(v) is not None)
    if keys:
        rows = [([Cell(r.run)] if ctx.multi_run else []) + [Cell(r.id)] +
                [num(as_float((rec.summary or {}).get(k)), 1) for k in keys] for r, rec in shown]
        columns = ([Column("run")] if ctx.multi_run else []) + [Column("case")] + [Column(k, True) for k in keys]
        blocks.append(Table(ctx.new_id("table"), columns, rows, caption="Telemetry summary per case"))
    return View("gpu", "GPU telemetry", "Utilisation, power, SM clock and memory sampled by NVML while the case ran; "
                "the shaded bands are the windows whose time was measured.", blocks)
