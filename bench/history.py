"""`bench history`: every case's throughput across many runs, ordered by time and labelled with the
git commit, with change points marked, on one self-contained HTML page.

Change points: PELT (``ruptures``, an exact penalised segmentation) on the log of each run's
median throughput, with an L1 cost (a change of median level; robust to the odd slow run, where an
L2 cost flagged one A/A series in three with heavy-tailed noise) and a penalty of ``2 ln n`` in
units of the series' own noise. The noise is estimated robustly from the run-to-run differences
(median absolute deviation, which a few level shifts barely move), floored at 0.5% because no
machine repeats a run more closely than that, so a flat synthetic series flags nothing. Every
level holds at least ``MIN_SEGMENT`` runs: one odd run is an outlier, two in a row are a level.
Simulated with 2% run-to-run noise: a series of 30 unchanged runs shows a change point 1% of the
time (10 runs: 10%); a 10% step is found 100% of the time, a 5% step 65% (10 runs) to 89% (30).
This is the idea of E-divisive as Apache Otava and MongoDB use it (a penalised split of the
series into levels), with an exact solver instead of a permutation test, which a handful of
runs could not support.

Runs whose environment fingerprints differ (``bench.environment.fingerprint_key``) are separate
series: a new machine is not a change point of the code.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.environment import fingerprint_key
from bench.errors import BenchError, ResultsError
from bench.results import RESULTS_NAME, Run, load_run, write_output
from bench.rules import METRICS

if TYPE_CHECKING:
    import plotly.graph_objects as go

MIN_SEGMENT = 2
NOISE_FLOOR = 0.005  # relative noise below which a series is treated as this noisy anyway


@dataclass(frozen=True)
class Point:
    """One run's value of one case."""

    order: int  # position of the run among all runs of the history, oldest first
    run_label: str
    path: str
    time: str
    commit: str  # short hash, '+dirty' when the tree had local changes, '-' when unknown
    value: float
    ci95: tuple[float, float] | None


@dataclass(frozen=True)
class ChangePoint:
    index: int  # the first point of the new level
    before: float  # median of the level before
    after: float  # median of the level from here on
    change: float  # after/before - 1


@dataclass(frozen=True)
class Series:
    case_id: str
    fingerprint: str
    points: list[Point]
    change_points: list[ChangePoint]


@dataclass(frozen=True)
class History:
    root: Path
    runs: list[Run]
    series: list[Series]
    skipped: list[str]  # files that could not be read, each with the reason (``skip_invalid``)
    warnings: list[str]  # runs placed by a guess (no readable time), each named


def find_results(root: Path) -> list[Path]:
    if not root.is_dir():
        raise ResultsError(f"{root}: not a folder (give the folder that holds the runs' results)")
    found = sorted(root.rglob(RESULTS_NAME))
    if not found:
        raise ResultsError(f"{root}: no {RESULTS_NAME} found under this folder")
    return found


_UNKNOWN_TIME = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def _time(run: Run) -> dt.datetime:
    """When the run was measured: the environment's time, else the run's start; the earliest
    possible time when neither can be read (the caller warns)."""
    for text in (run.environment.time, run.doc.run.started):
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            continue
        return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    return _UNKNOWN_TIME


def commit_label(run: Run) -> str:
    git = run.environment.git
    if git is None or not git.commit:
        return "-"
    return git.commit[:10] + ("+dirty" if git.dirty else "")


def detect_change_points(values: Sequence[float], min_segment: int = MIN_SEGMENT,
                         noise_floor: float = NOISE_FLOOR) -> list[int]:
    """Indices where a new level starts in a series of positive values (see the module docstring)."""
    import numpy as np
    import ruptures

    y = np.log(np.asarray(values, dtype=float))
    n = len(y)
    if n < 2 * min_segment:
        return []
    diffs = np.diff(y)
    # MAD of the differences; a difference of two runs has sqrt(2) times one run's noise.
    sigma = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2)
    sigma = max(sigma, noise_floor)
    algo = ruptures.Pelt(model="l1", min_size=min_segment, jump=1).fit((y / sigma).reshape(-1, 1))
    ends: list[int] = algo.predict(pen=2 * math.log(n))
    return [int(e) for e in ends[:-1]]


def _levels(values: Sequence[float], starts: list[int]) -> list[ChangePoint]:
    import numpy as np

    bounds = [0, *starts, len(values)]
    out = []
    for i, start in enumerate(starts):
        before = float(np.median(values[bounds[i]:start]))
        after = float(np.median(values[start:bounds[i + 2]]))
        out.append(ChangePoint(start, before, after, after / before - 1))
    return out


def load_history(root: Path, metric: str = "throughput", *, skip_invalid: bool = False) -> History:
    """Read every results file under ``root``, order the runs by time and build one series per
    case and environment fingerprint. A file that cannot be read is an error (a trend drawn
    without it would hide it), unless ``skip_invalid``: then it is skipped and listed."""
    spec = METRICS.get(metric)
    runs: list[Run] = []
    skipped: list[str] = []
    for path in find_results(root):
        try:
            runs.append(load_run(path, label=str(path.parent.relative_to(root)) or path.parent.name))
        except BenchError as exc:
            if not skip_invalid:
                raise
            skipped.append(str(exc))
    if not runs:
        raise ResultsError(f"{root}: none of the {len(skipped)} results file(s) could be read; first: {skipped[0]}")
    warnings = [f"{run.path}: no readable time (environment.time {run.environment.time!r}, run.started "
                f"{run.doc.run.started!r}); placed first in the history" for run in runs if _time(run) == _UNKNOWN_TIME]
    runs.sort(key=lambda r: (_time(r), str(r.path)))
    points: dict[tuple[str, str], list[Point]] = {}
    for order, run in enumerate(runs):
        key = fingerprint_key(run.environment)
        for case in run.cases:
            value = spec.value(case) if case.ok else None
            if value is None or value <= 0:
                continue
            ci = case.metrics.throughput.ci95 if metric == "throughput" and case.metrics is not None else None
            points.setdefault((case.id, key), []).append(Point(
                order, run.label, str(run.path), _time(run).isoformat(), commit_label(run), value,
                (float(ci[0]), float(ci[1])) if ci and ci[0] is not None and ci[1] is not None else None))
    series = []
    for (case_id, key), pts in points.items():
        values = [p.value for p in pts]
        series.append(Series(case_id, key, pts, _levels(values, detect_change_points(values))))
    series.sort(key=lambda s: (s.case_id, s.points[0].time))
    return History(root, runs, series, skipped, warnings)


# --- the page ----------------------------------------------------------------------------------

def _figure(case_id: str, series: list[Series]) -> go.Figure:
    import plotly.graph_objects as go

    from bench.report.figures import THEME, esc

    fig = go.Figure()
    many = len(series) > 1
    # The x axis is the runs' order in time, labelled with their commits: runs of one commit stay
    # apart, and series of different machines line up by when they ran.
    ticks = sorted({(p.order, p.commit) for s in series for p in s.points})
    for i, s in enumerate(series):
        name = esc(s.fingerprint if many else "throughput") or "unknown environment"
        hover = [f"{esc(p.run_label)}<br>commit {esc(p.commit)}<br>{esc(p.time)}" for p in s.points]
        lows = [p.value - p.ci95[0] if p.ci95 else 0 for p in s.points]
        highs = [p.ci95[1] - p.value if p.ci95 else 0 for p in s.points]
        fig.add_trace(go.Scatter(
            x=[p.order for p in s.points], y=[p.value for p in s.points], mode="lines+markers", name=name,
            legendgroup=str(i), text=hover, hovertemplate="%{y:.4~s} samples/s<br>%{text}<extra></extra>",
            error_y={"type": "data", "symmetric": False, "array": highs, "arrayminus": lows, "thickness": 1},
        ))
        if s.change_points:
            cps = s.change_points
            fig.add_trace(go.Scatter(
                x=[s.points[c.index].order for c in cps], y=[s.points[c.index].value for c in cps],
                mode="markers", name="change point", legendgroup=str(i), showlegend=i == 0,
                marker={"symbol": "x-thin", "size": 16, "line": {"width": 3, "color": "#c62828"}},
                text=[f"change point {c.change:+.1%}<br>median {c.before:.4g} → {c.after:.4g}<br>"
                      f"commit {esc(s.points[c.index].commit)}" for c in cps],
                hovertemplate="%{text}<extra></extra>",
            ))
    fig.update_layout(template=THEME, title={"text": esc(case_id)}, height=360, yaxis_title="samples/s",
                      xaxis_title="commit (runs oldest first)", hovermode="closest",
                      xaxis={"tickmode": "array", "tickvals": [t[0] for t in ticks],
                             "ticktext": [esc(t[1][:7] + ("*" if t[1].endswith("+dirty") else "")) for t in ticks]})
    return fig


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bench history: {{ root }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
{% if plotlyjs %}<script>{{ plotlyjs | safe }}</script>{% else %}
<script src="https://cdn.plot.ly/plotly-{{ plotly_version }}.min.js"></script>{% endif %}
<style>body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}table{border-collapse:collapse}
td,th{border-bottom:1px solid #ddd;padding:.2rem .6rem;text-align:left}.cp{color:#c62828}</style>
</head><body>
<h1>Throughput history</h1>
<p>{{ runs }} run(s) under <code>{{ root }}</code>, oldest first; {{ series | length }} series.
Change points (✕) mark where a new level starts: PELT (L1 cost) on log throughput, penalty 2·ln(n)
in units of the run-to-run noise, at least {{ min_segment }} runs per level. Runs on different environments
are separate series.</p>
{% if skipped %}<p>Skipped {{ skipped | length }} unreadable file(s):</p><ul>
{% for s in skipped %}<li>{{ s }}</li>{% endfor %}</ul>{% endif %}
<table><tr><th>case</th><th>environment</th><th>runs</th><th>change points</th></tr>
{% for s in series %}<tr><td>{{ s.case_id }}</td><td>{{ s.fingerprint }}</td><td>{{ s.points | length }}</td>
<td class="cp">{% for c in s.change_points %}{{ "%+.1f%%" | format(c.change * 100) }} at {{ s.points[c.index].commit }}
{% endfor %}</td></tr>{% endfor %}</table>
{% for f in figures %}<div class="fig" id="{{ f.id }}" style="height:{{ f.height }}px"></div>
<script>(function(){var s={{ f.spec | safe }};Plotly.newPlot("{{ f.id }}",s.data,s.layout,{responsive:true,displaylogo:false});})();</script>
{% endfor %}
</body></html>
"""


def render_history(history: History, *, inline_plotlyjs: bool = True) -> str:
    import jinja2
    import plotly.offline

    from bench.report.figures import figure_json

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    by_case: dict[str, list[Series]] = {}
    for s in history.series:
        by_case.setdefault(s.case_id, []).append(s)
    figures = [{"id": f"fig{i}", "spec": figure_json(_figure(case_id, group)), "height": 360}
               for i, (case_id, group) in enumerate(by_case.items())]
    return env.from_string(_PAGE).render(
        root=str(history.root), runs=len(history.runs), series=history.series, skipped=history.skipped,
        figures=figures, min_segment=MIN_SEGMENT, plotly_version=plotly.offline.get_plotlyjs_version(),
        plotlyjs=plotly.offline.get_plotlyjs() if inline_plotlyjs else None)


def write_history(history: History, out: Path, *, inline_plotlyjs: bool = True) -> Path:
    return write_output(out, render_history(history, inline_plotlyjs=inline_plotlyjs))

