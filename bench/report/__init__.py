"""HTML reports: one self-contained page (plotly.js inlined) built from one or more results files.

Figures are made with plotly and placed into a jinja2 template with autoescaping, so every string
from a suite, a results file or an error is shown as text, never interpreted as HTML."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.results import Run, atomic_write_text

if TYPE_CHECKING:
    import plotly.graph_objects as go


def _throughput_figure(runs: list[Run]) -> go.Figure | None:
    import plotly.graph_objects as go

    fig = go.Figure()
    for run in runs:
        ok = [c for c in run.cases if c["status"] == "ok" and c.get("metrics")]
        if not ok:
            continue
        med = [c["metrics"]["throughput"]["median"] for c in ok]
        lo = [c["metrics"]["throughput"]["ci95"][0] for c in ok]
        hi = [c["metrics"]["throughput"]["ci95"][1] for c in ok]
        fig.add_trace(go.Bar(
            name=run.label, x=[c["id"] for c in ok], y=med,
            error_y={"type": "data", "symmetric": False,
                     "array": [h - m for h, m in zip(hi, med, strict=True)],
                     "arrayminus": [m - low for m, low in zip(med, lo, strict=True)]},
            hovertemplate="%{x}<br>%{y:.4~s} samples/s<extra>" + run.label.replace("<", "&lt;") + "</extra>",
        ))
    if not fig.data:
        return None
    fig.update_layout(title="Throughput (median, 95% CI)", yaxis_title="samples/s", barmode="group",
                      template="plotly_white", height=460, margin={"b": 160})
    return fig


def _rows(runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        for case in run.cases:
            m = case.get("metrics") or {}
            thr = m.get("throughput") or {}
            step = m.get("step_time_ms") or {}
            p = case["params"]
            rows.append({
                "run": run.label, "id": case["id"], "status": case["status"], "error": case.get("error") or "",
                "model": p["model"].get("name") or p["model"].get("import"),
                "optimizer": p["optimizer"]["name"], "activation": p["activation"], "mode": p["mode"],
                "batch_size": p["batch_size"],
                "throughput": thr.get("median"), "ci": thr.get("ci95"), "ci_rel": thr.get("ci_rel_half_width"),
                "p50": step.get("p50"), "p95": step.get("p95"), "rss": m.get("peak_rss_mb"),
                "warnings": case.get("warnings") or [],
            })
    return rows


def render(runs: list[Run], *, inline_plotlyjs: bool = True) -> str:
    import jinja2
    import plotly.offline

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
    )
    figures = []
    fig = _throughput_figure(runs)
    if fig is not None:
        figures.append(fig.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True}))
    plotlyjs = plotly.offline.get_plotlyjs() if inline_plotlyjs else None
    return env.get_template("report.html.j2").render(
        runs=runs, rows=_rows(runs), figures=figures, plotlyjs=plotlyjs,
    )


def write_report(runs: list[Run], out: Path, *, inline_plotlyjs: bool = True) -> Path:
    html = render(runs, inline_plotlyjs=inline_plotlyjs)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, html)
    return out
