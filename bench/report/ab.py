"""The report of ``bench ab``: its verdicts as Markdown (for a CI job summary) and as a page whose
A/B view shows each case's per-pair changes in time order, with the interval, the threshold and
the confirmation, followed by both sides' usual views."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.pairs import pct
from bench.records import ABCaseRecord, ABDoc
from bench.report.figures import THEME, data_json, esc, rnd_all
from bench.report.model import Cell, Column, Context, Note, Switcher, Table, View, case_rows

HEIGHT = 420
STAGE_COLOURS = ("#0072B2", "#E69F00")  # the first set of pairs, the confirmation
MARK = {"regression": "🔴", "improvement": "🟢", "unchanged": "⚪", "inconclusive": "🟡", "failed": "❌",
        "skipped": "⏭️"}


def _change(case: ABCaseRecord) -> str:
    if case.ratio is None or case.low is None or case.high is None:
        return "-"
    return f"{pct(case.ratio)} [{pct(case.low)[:-1]}, {pct(case.high)[:-1]}]"


def _confirmation(case: ABCaseRecord) -> str:
    if len(case.stages) < 2:
        return "-" if case.verdict not in ("regression", "improvement") else "off"
    second = case.stages[1]
    said = second.answer or "undecided"
    agreed = "confirmed" if second.answer == case.stages[0].answer else "not confirmed"
    return f"{agreed}: {second.pairs} fresh pairs said {said}"


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(case: ABCaseRecord, width: int = 16) -> str:
    """The per-pair changes in time order, as medians of ``width`` consecutive blocks, drawn from
    the most negative (▁) to the most positive (█) within ±max: a drift or a burst shows as a shape."""
    import statistics

    values = [v for v, c in zip(case.log_ratios, case.counted, strict=False) if c]
    if len(values) < 2:
        return ""
    size = max(1, math.ceil(len(values) / width))
    blocks = [statistics.median(values[i:i + size]) for i in range(0, len(values), size)]
    top = max(abs(b) for b in blocks) or 1.0
    return "".join(SPARKS[min(7, int((b / top + 1) / 2 * 8))] for b in blocks)


def headline(doc: ABDoc) -> str:
    counts: dict[str, int] = {}
    for c in doc.cases:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    order = ("regression", "improvement", "inconclusive", "unchanged", "failed", "skipped")
    parts = [f"{counts[v]} {v}" for v in order if counts.get(v)]
    return ", ".join(parts) or "no cases"


def _side(doc: ABDoc, label: str) -> str:
    s = doc.base if label == "base" else doc.new
    what = f"`{s.spec}` ({s.revision[:10]})" if s.revision else f"`{s.directory}`"
    return f"{what}, Python {s.python_version or '?'}, torch {s.torch or '?'}"


def markdown(doc: ABDoc) -> str:
    """The verdicts as GitHub-flavoured Markdown."""
    s = doc.settings
    title = "bench aa (calibration: the same code on both sides)" if doc.kind == "aa" else "bench ab"
    lines = [
        f"## {title}: {doc.suite.name}", "",
        f"**{headline(doc)}** (threshold ±{s.threshold:.1%}, {s.confidence:.0%} intervals, "
        f"pairs interleaved in one job; order seed {s.order_seed})", "",
        f"- base: {_side(doc, 'base')}",
        f"- new: {_side(doc, 'new')}", "",
        "| | case | verdict | change new/base | pairs | confirmation | pairs over time |",
        "|---|---|---|---|---:|---|---|",
    ]
    for c in doc.cases:
        lines.append(f"| {MARK.get(c.verdict, '')} | `{c.id}` | {c.verdict} | {_change(c)} | {c.pairs} | "
                     f"{_confirmation(c)} | {sparkline(c)} |")
    lines += ["", "<details><summary>What each verdict rests on</summary>", ""]
    lines += [f"- `{c.id}`: {c.message}" for c in doc.cases]
    lines += ["", "Change: throughput of new over base (negative: slower), Hodges-Lehmann over pairs, with its "
              f"{s.confidence:.0%} Wilcoxon signed-rank interval. Each pair measured both sides back to back in "
              "a balanced random order, so the machine's drift cancels within it. A flagged case is measured "
              "again with fresh pairs before it counts. Pairs over time: the per-pair changes in time order "
              "(medians of blocks, lowest ▁ to highest █).", "", "</details>", ""]
    return "\n".join(lines)


def _figure(case: ABCaseRecord, threshold: float) -> dict[str, Any]:
    changes = [math.expm1(v) * 100 for v in case.log_ratios]
    data: list[dict[str, Any]] = []
    for stage in (0, 1):
        idx = [i for i, (k, c) in enumerate(zip(case.stage_of_pair, case.counted, strict=True)) if k == stage and c]
        data.append({"x": idx, "y": rnd_all((changes[i] for i in idx), 3)})
    dropped = [i for i, c in enumerate(case.counted) if not c]
    data.append({"x": dropped, "y": rnd_all((changes[i] for i in dropped), 3)})
    shapes: list[dict[str, Any]] = []
    if case.low is not None and case.high is not None and case.ratio is not None:
        shapes += [{"y0": (case.low - 1) * 100, "y1": (case.high - 1) * 100},
                   {"y0": (case.ratio - 1) * 100, "y1": (case.ratio - 1) * 100}]
    else:
        shapes += [{"visible": False}, {"visible": False}]
    t = math.expm1(math.log1p(threshold)) * 100
    shapes += [{"y0": t, "y1": t}, {"y0": -100 * threshold / (1 + threshold), "y1": -100 * threshold / (1 + threshold)}]
    return {"data": data, "layout": {"title": {"text": esc(f"{case.id}: {case.verdict}")}, "shapes": shapes}}


TRACES: list[dict[str, Any]] = [
    {"type": "scatter", "mode": "markers", "name": "pair (first set)", "marker": {"size": 5, "color": STAGE_COLOURS[0]},
     "hovertemplate": "pair %{x}: %{y:+.1f}%<extra></extra>"},
    {"type": "scatter", "mode": "markers", "name": "pair (confirmation)",
     "marker": {"size": 5, "color": STAGE_COLOURS[1]}, "hovertemplate": "pair %{x}: %{y:+.1f}%<extra></extra>"},
    {"type": "scatter", "mode": "markers", "name": "warm-up (not counted)",
     "marker": {"size": 6, "symbol": "x-thin", "line": {"width": 1.5, "color": "#999999"}},
     "hovertemplate": "pair %{x}: %{y:+.1f}% (warm-up)<extra></extra>"},
]
SHAPES: list[dict[str, Any]] = [
    {"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "fillcolor": "#0072B2", "opacity": 0.15,
     "line": {"width": 0}, "layer": "below"},
    {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "line": {"color": "#0072B2", "width": 1.5}},
    {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "line": {"color": "#D55E00", "dash": "dot"}},
    {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "line": {"color": "#D55E00", "dash": "dot"}},
]


def build(doc: ABDoc, ctx: Context) -> View:
    s = doc.settings
    cols = [Column("case"), Column("verdict"), Column("change new/base", True, f"{s.confidence:.0%} interval"),
            Column("pairs", True), Column("confirmation"), Column("adjusted p", True, "Benjamini-Hochberg"),
            Column("what it rests on")]
    cls = {"regression": "bad", "improvement": "good", "inconclusive": "warn", "failed": "bad"}
    rows = [[Cell(c.id), Cell(c.verdict, cls=cls.get(c.verdict, "")),
             Cell(_change(c), sort=c.ratio), Cell(str(c.pairs), sort=c.pairs), Cell(_confirmation(c)),
             Cell("-" if c.p_adjusted is None else f"{c.p_adjusted:.2g}", sort=c.p_adjusted), Cell(c.message)]
            for c in doc.cases]
    blocks: list[Any] = [
        Note(f"{headline(doc)}. Base: {_side(doc, 'base')}. New: {_side(doc, 'new')}.".replace("`", "")),
        Table(ctx.new_id("ab"), cols, rows, caption="Verdicts", filterable=len(rows) > 10)]
    measured = [c for c in doc.cases if c.log_ratios]
    if measured:
        spec = {"layout": {"template": THEME, "height": HEIGHT, "showlegend": True, "hovermode": "closest",
                           "xaxis": {"title": {"text": "pair (time order)"}, "zeroline": False},
                           "yaxis": {"title": {"text": "change new/base (%)"}, "zeroline": True}},
                "traces": TRACES, "shapes": SHAPES, "figures": [_figure(c, s.threshold) for c in measured]}
        blocks.append(Switcher(ctx.new_id("ab-switch"), "case", [c.id for c in measured], data_json(spec), HEIGHT,
                               caption=("Dots: each pair's change (new over base), in the order the pairs ran; blue "
                                        "the first set, orange the fresh set that confirms a flagged case; shaded: "
                                        f"the {s.confidence:.0%} interval of the change; dotted: the threshold "
                                        f"±{s.threshold:.1%}.")))
    return View("ab", "A/B", "Both sides of every case were measured in pairs, back to back, so that the machine's "
                "drift cancels within each pair; the verdict rests on the pairs, never on one side's level.", blocks)


def html(doc: ABDoc, out_dir: Path) -> str:
    """The page: the A/B view, then both sides' views (from ``out_dir``'s base and new results)."""
    from bench.report import render
    from bench.results import load_run

    runs = [load_run(out_dir / label, label=label) for label in ("base", "new")]
    ctx = Context(runs, case_rows(runs), out_dir, None)
    return render(runs, html_dir=out_dir, lead=[build(doc, ctx)], title=f"A/B of {doc.suite.name}")
