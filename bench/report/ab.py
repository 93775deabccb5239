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
    return f"{agreed}: {second.launches} fresh launches said {said}"


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(case: ABCaseRecord, width: int = 16) -> str:
    """The launches' changes in time order, as medians of at most ``width`` consecutive blocks, drawn from
    the most negative (▁) to the most positive (█) within ±max: a drift or a burst shows as a shape."""
    import statistics

    values = list(case.launch_ratios)
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
        "| | case | verdict | change new/base | launches | confirmation | launches over time |",
        "|---|---|---|---|---:|---|---|",
    ]
    for c in doc.cases:
        lines.append(f"| {MARK.get(c.verdict, '')} | `{c.id}` | {c.verdict} | {_change(c)} | {c.launches} | "
                     f"{_confirmation(c)} | {sparkline(c)} |")
    lines += ["", "<details><summary>What each verdict rests on</summary>", ""]
    lines += [f"- `{c.id}`: {c.message}" for c in doc.cases]
    lines += ["", "Change: throughput of new over base (negative: slower), Hodges-Lehmann over launches, with "
              f"its {s.confidence:.0%} Wilcoxon signed-rank interval. A launch starts both sides' processes "
              f"afresh ({START.get(s.start, START[None])}) and takes {s.pairs_per_launch} pairs from them, "
              "each pair measuring both sides back to back in a balanced random order, so the machine's "
              "drift cancels within it; a launch's change is the median of its pairs'. A flagged case is measured again with fresh launches before it counts. Launches "
              "over time: their changes in time order (lowest ▁ to highest █).", "", "</details>", ""]
    return "\n".join(lines)


START = {"shared": "one process holding both sides' models, each from its own side's code, so a process's "
                   "speed is common to both",
         "server": "a process per side, forked back to back from a fresh server of their own",
         "interpreters": "a fresh interpreter per side",
         None: "a process per side, forked from one server for the whole run (files written before 2026-12-02)"}


def _figure(case: ABCaseRecord, threshold: float) -> dict[str, Any]:
    stages = [case.stage_of_pair[case.launch_of_pair.index(k)] if k in case.launch_of_pair else 0
              for k in range(len(case.launch_ratios))]
    data: list[dict[str, Any]] = []
    for stage in (0, 1):
        idx = [k for k, st in enumerate(stages) if st == stage]
        data.append({"x": idx, "y": rnd_all((math.expm1(case.launch_ratios[k]) * 100 for k in idx), 3)})
    # Each pair at its launch, spread a little across it, so the spread inside a launch shows.
    per = max(1, max((case.launch_of_pair.count(k) for k in set(case.launch_of_pair)), default=1))
    seen: dict[int, int] = {}
    xs = []
    for k in case.launch_of_pair:
        xs.append(round(k - 0.3 + 0.6 * seen.get(k, 0) / max(1, per - 1), 3))
        seen[k] = seen.get(k, 0) + 1
    data.append({"x": xs, "y": rnd_all((math.expm1(v) * 100 for v in case.log_ratios), 3)})
    shapes: list[dict[str, Any]] = []
    if case.low is not None and case.high is not None and case.ratio is not None:
        shapes += [{"y0": (case.low - 1) * 100, "y1": (case.high - 1) * 100},
                   {"y0": (case.ratio - 1) * 100, "y1": (case.ratio - 1) * 100}]
    else:
        shapes += [{"visible": False}, {"visible": False}]
    shapes += [{"y0": 100 * threshold, "y1": 100 * threshold},
               {"y0": -100 * threshold / (1 + threshold), "y1": -100 * threshold / (1 + threshold)}]
    return {"data": data, "layout": {"title": {"text": esc(f"{case.id}: {case.verdict}")}, "shapes": shapes}}


TRACES: list[dict[str, Any]] = [
    {"type": "scatter", "mode": "markers", "name": "launch (first set): median of its pairs",
     "marker": {"size": 10, "color": STAGE_COLOURS[0]}, "hovertemplate": "launch %{x}: %{y:+.1f}%<extra></extra>"},
    {"type": "scatter", "mode": "markers", "name": "launch (confirmation)",
     "marker": {"size": 10, "color": STAGE_COLOURS[1]}, "hovertemplate": "launch %{x}: %{y:+.1f}%<extra></extra>"},
    {"type": "scatter", "mode": "markers", "name": "pair", "marker": {"size": 4, "color": "#999999"}, "opacity": 0.6,
     "hovertemplate": "pair: %{y:+.1f}%<extra></extra>"},
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
            Column("launches", True), Column("confirmation"), Column("adjusted p", True, "Benjamini-Hochberg"),
            Column("what it rests on")]
    cls = {"regression": "bad", "improvement": "good", "inconclusive": "warn", "failed": "bad"}
    rows = [[Cell(c.id), Cell(c.verdict, cls=cls.get(c.verdict, "")),
             Cell(_change(c), sort=c.ratio), Cell(str(c.launches), sort=c.launches), Cell(_confirmation(c)),
             Cell("-" if c.p_adjusted is None else f"{c.p_adjusted:.2g}", sort=c.p_adjusted), Cell(c.message)]
            for c in doc.cases]
    blocks: list[Any] = [
        Note(f"{headline(doc)}. Base: {_side(doc, 'base')}. New: {_side(doc, 'new')}.".replace("`", "")),
        Table(ctx.new_id("ab"), cols, rows, caption="Verdicts", filterable=len(rows) > 10)]
    measured = [c for c in doc.cases if c.log_ratios]
    if measured:
        spec = {"layout": {"template": THEME, "height": HEIGHT, "showlegend": True, "hovermode": "closest",
                           "xaxis": {"title": {"text": "launch (time order)"}, "zeroline": False},
                           "yaxis": {"title": {"text": "change new/base (%)"}, "zeroline": True}},
                "traces": TRACES, "shapes": SHAPES, "figures": [_figure(c, s.threshold) for c in measured]}
        blocks.append(Switcher(ctx.new_id("ab-switch"), "case", [c.id for c in measured], data_json(spec), HEIGHT,
                               caption=("Large dots: each launch's change (new over base, the median of its pairs), "
                                        "in time order; blue the first set, orange the fresh set that confirms a "
                                        "flagged case; small grey dots: the pairs of each launch; shaded: the "
                                        f"{s.confidence:.0%} interval of the change over launches; dotted: the "
                                        f"threshold ±{s.threshold:.1%}.")))
    return View("ab", "A/B", "Both sides of every case were started afresh in each launch and measured in pairs, "
                "back to back, so that the machine's drift cancels within each pair; the verdict rests on the "
                "launches (a process's own speed varies from one start to the next), never on one side's level.",
                blocks)


def html(doc: ABDoc, out_dir: Path) -> str:
    """The page: the A/B view, then both sides' views (from ``out_dir``'s base and new results)."""
    from bench.report import render
    from bench.results import load_run

    runs = [load_run(out_dir / label, label=label) for label in ("base", "new")]
    ctx = Context(runs, case_rows(runs), out_dir, None)
    return render(runs, html_dir=out_dir, lead=[build(doc, ctx)], title=f"A/B of {doc.suite.name}")
