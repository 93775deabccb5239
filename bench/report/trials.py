"""The Trials view: each case's trial medians in time order (one per round), its median and 95%
interval over trials as a band, and the trials that drifted inside themselves marked, so a reader
sees the drift across rounds and the spread the interval covers. One case at a time (a switcher):
a page of a thousand cases stays light."""

from __future__ import annotations

import math
from typing import Any

from bench.report.figures import THEME, data_json, esc, rnd, rnd_all
from bench.report.model import CaseRow, Context, Switcher, View

HEIGHT = 420
# Trial medians in the view: a thousand cases of ten rounds (~100 kB of page); beyond it, the first
# cases that fit (every trial of a case is shown, or none).
TRIALS_BUDGET = 10_000
UNSTABLE = "#D55E00"

# What the i-th trace and shape of every case's figure share (the switcher merges them in), so each
# case carries only its own numbers.
TRACES: list[dict[str, Any]] = [
    {"type": "scatter", "mode": "lines+markers", "name": "trial median", "line": {"color": "#0072B2", "width": 1.5},
     "marker": {"size": 7}, "hovertemplate": "round %{x}: %{y:,.1f} samples/s<extra></extra>"},
    {"type": "scatter", "mode": "markers", "name": "unstable trial (drifted beyond 10% inside itself)",
     "marker": {"symbol": "x-thin", "size": 14, "line": {"width": 2.5, "color": UNSTABLE}, "color": UNSTABLE},
     "hovertemplate": "round %{x}: unstable, drifted %{customdata:+.1%} inside the trial<extra></extra>"},
]
SHAPES: list[dict[str, Any]] = [
    {"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "fillcolor": "#0072B2", "opacity": 0.13,
     "line": {"width": 0}, "layer": "below"},
    {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "line": {"color": "#0072B2", "dash": "dash",
                                                                              "width": 1}},
]


def _cases(ctx: Context) -> list[CaseRow]:
    """Cases whose interval rests on trials: two or more (a version-1 case is a single stretch)."""
    return [r for r in ctx.rows if r.trial_based and r.metrics is not None and len(r.case.trials or []) >= 2]


def _figure(r: CaseRow, rounds: list[int]) -> dict[str, Any]:
    """One case's trials; ``x`` only where they are not ``rounds`` (the shared default: every round)."""
    trials = sorted(r.case.trials or [], key=lambda t: (t.round, t.start_s))
    unstable = [t for t in trials if not t.stable]
    x = [t.round for t in trials]
    data: list[dict[str, Any]] = [{"y": rnd_all(t.median for t in trials)} | ({} if x == rounds else {"x": x})]
    if unstable:
        data.append({"x": [t.round for t in unstable], "y": rnd_all(t.median for t in unstable),
                     "customdata": rnd_all((t.drift for t in unstable), 3)})
    thr = r.throughput
    assert thr is not None and r.metrics is not None
    median, low, high = thr
    shapes = [{"y0": rnd(low), "y1": rnd(high)}, {"y0": rnd(median), "y1": rnd(median)}]
    # The title names the case only: its median and interval are in the Summary's table, and a
    # thousand cases' sentences would weigh more than their trials.
    return {"data": data, "layout": {"title": {"text": esc(r.id)}, "shapes": shapes}}


def _shared_layout(cases: list[CaseRow]) -> dict[str, Any]:
    """Rounds are whole numbers: ticks at every round while they fit, never at 0.5."""
    last = max((t.round for r in cases for t in r.case.trials or []), default=0)
    return {"template": THEME, "height": HEIGHT, "showlegend": True, "hovermode": "closest",
            "xaxis": {"title": {"text": "round (time order)"}, "tickmode": "linear", "tick0": 0,
                      "dtick": max(1, math.ceil((last + 1) / 15)), "zeroline": False},
            "yaxis": {"title": {"text": "trial median (samples/s)"}}}


def within_budget(cases: list[CaseRow], budget: int = TRIALS_BUDGET) -> list[CaseRow]:
    """The first cases whose trials together fit the budget (at least one case)."""
    shown: list[CaseRow] = []
    total = 0
    for r in cases:
        total += len(r.case.trials or [])
        if shown and total > budget:
            break
        shown.append(r)
    return shown


def build(ctx: Context) -> View | None:
    found = _cases(ctx)
    if not found:
        return None
    cases = within_budget(found)
    rounds = list(range(max((t.round for r in cases for t in r.case.trials or []), default=0) + 1))
    traces = [TRACES[0] | {"x": rounds}, TRACES[1]]
    spec = {"layout": _shared_layout(cases), "traces": traces, "shapes": SHAPES,
            "figures": [_figure(r, rounds) for r in cases]}
    unstable = sum(1 for r in cases if any(not t.stable for t in r.case.trials or []))
    caption = ("Dots: each trial's median throughput, in the order the rounds ran; shaded: the case's 95% interval "
               "over its trials; dashed: its median (the median of the trial medians). "
               + (f"Crosses: trials whose throughput drifted beyond 10% inside themselves ({unstable} case"
                  f"{'s' if unstable != 1 else ''})." if unstable else "No trial drifted beyond 10% inside itself."))
    if len(cases) < len(found):
        caption += (f" Shown: the first {len(cases)} of {len(found)} cases (at most {TRIALS_BUDGET:,} trials keep "
                    "the page light; the rest are in results.json).")
    switcher = Switcher(ctx.new_id("switch"), "case", [f"{r.run} · {r.id}" if ctx.multi_run else r.id for r in cases],
                        data_json(spec), HEIGHT, caption=caption)
    return View("trials", "Trials", "Every case ran one short trial per round, the rounds in a fresh random order; "
                "its estimate is the median of its trial medians and its interval comes from their spread. "
                "Pick a case to see its trials over time.", [switcher])
