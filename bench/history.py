"""`bench history`: every case's throughput across many runs, ordered by time and labelled with the
git commit, with change points marked, on one self-contained HTML page (and as JSON for CI).

Values: a case's throughput *relative to the machine-speed reference* measured with each of its
trials (``bench.reference``: in a CPU case's own process, otherwise in the same round) where every
run of the series measured one in the same place, since runs made at different times see different
machine speeds and the reference cancels most of that; raw throughput otherwise (older results, or
a series that spans the change from the round's reference to companions), and the page and the
JSON say which.

Change points are found in two steps, as Apache Otava does (a segmentation, then a test of each
split against the noise). Candidates: PELT (``ruptures``, an exact penalised segmentation) on the log of each run's
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

Each candidate is moved to the nearest commit boundary (several runs of one commit are repeats,
never a series: a change inside them cannot be the code's) and kept only if (a) the runs of the
level before and the level after differ significantly (Welch's t-test on log values, p < ``ALPHA``,
each run's variance floored at the noise floor), with at least ``MIN_SEGMENT`` runs on each side;
and (b) the change exceeds the *noise floor*: ``bench aa``'s calibration when given, else twice the
series' own noise (the spread of repeats of one commit, or of run-to-run differences). A change
point with fewer than ``CONFIRM_RUNS`` runs after it is *tentative* until later runs confirm it.
Each one carries its change, a 95% interval (Welch) and the runs it rests on.

Runs whose environment fingerprints differ (``bench.environment.fingerprint_key``) are separate
series: a new machine is not a change point of the code.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

from bench.environment import fingerprint_key
from bench.errors import BenchError, ResultsError
from bench.records import finite
from bench.results import RESULTS_NAME, Run, load_run, write_output
from bench.rules import METRICS

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from bench.calibration import CalibrationDoc

MIN_SEGMENT = 2
CONFIRM_RUNS = 3
ALPHA = 0.05
FLOOR_SIGMAS = 2.0
NOISE_FLOOR = 0.005  # relative noise below which a series is treated as this noisy anyway


@dataclass(frozen=True)
class Point:
    """One run's value of one case."""

    order: int  # position of the run among all runs of the history, oldest first
    run_label: str
    path: str
    time: str
    commit: str  # short hash, '+dirty' when the tree had local changes, '-' when unknown
    value: float  # what the change points are found on: relative throughput if the series has it, else raw
    ci95: tuple[float, float] | None
    raw: float = 0.0  # raw throughput, samples/s
    relative: float | None = None  # throughput over the machine-speed reference, when measured
    relative_source: str | None = None  # where that reference was measured: case, round or mixed


@dataclass(frozen=True)
class ChangePoint:
    index: int  # the first point of the new level
    before: float  # median of the level before
    after: float  # median of the level from here on
    change: float  # after/before - 1
    low: float = math.nan  # 95% interval of the change (Welch, on log values)
    high: float = math.nan
    p: float = math.nan  # Welch's t-test of the two levels' runs
    runs_before: int = 0
    runs_after: int = 0
    tentative: bool = False  # fewer than CONFIRM_RUNS runs after it so far


@dataclass(frozen=True)
class Series:
    case_id: str
    fingerprint: str
    points: list[Point]
    change_points: list[ChangePoint]
    relative: bool = False  # values are relative to the machine-speed reference
    noise_floor: float = NOISE_FLOOR  # changes within it are never change points
    floor_source: str = "the series' own spread"


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


def series_noise(values: Sequence[float], commits: Sequence[str]) -> float:
    """One run's relative noise: from repeats of one commit where there are any (robust sd of log
    values around their commit's median), else from run-to-run differences; at least NOISE_FLOOR."""
    import numpy as np

    y = np.log(np.asarray(values, dtype=float))
    groups = _groups(commits)
    deviations = [float(v) for a, b in groups if b - a >= 2 for v in y[a:b] - np.median(y[a:b])]
    if len(deviations) >= 4:
        return max(1.4826 * float(np.median(np.abs(deviations))) * math.sqrt(2), NOISE_FLOOR)
    if len(y) < 3:
        return NOISE_FLOOR
    diffs = np.diff(y)
    return max(1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2), NOISE_FLOOR)


def _groups(commits: Sequence[str]) -> list[tuple[int, int]]:
    """[start, end) of each run of consecutive points with one known commit (repeats)."""
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(commits) + 1):
        if i == len(commits) or commits[i] != commits[start] or commits[i] == "-":
            out.append((start, i))
            start = i
    return out


def _nearest(boundaries: Sequence[int], index: int) -> int:
    return min(boundaries, key=lambda b: (abs(b - index), b))


def _welch(a: Sequence[float], b: Sequence[float], floor: float) -> tuple[float, float, float]:
    """Difference of means of two groups of log values, its 95% interval and Welch's p, each
    group's variance at least ``floor**2`` (no machine repeats closer)."""
    import numpy as np
    from scipy import stats

    na, nb = len(a), len(b)
    va = max(float(np.var(a, ddof=1)), floor**2)
    vb = max(float(np.var(b, ddof=1)), floor**2)
    se = math.sqrt(va / na + vb / nb)
    diff = float(np.mean(b) - np.mean(a))
    df = (va / na + vb / nb) ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    half = float(stats.t.ppf(0.975, df)) * se
    return diff, half, p


def find_change_points(values: Sequence[float], commits: Sequence[str], *, floor: float | None = None,
                       alpha: float = ALPHA) -> tuple[list[ChangePoint], float]:
    """Change points beyond the noise (module docstring) and the noise floor they had to exceed."""
    import numpy as np

    n = len(values)
    noise = series_noise(values, commits)
    floor = floor if floor is not None else FLOOR_SIGMAS * noise
    boundaries = [a for a, _ in _groups(commits)][1:]
    if not boundaries or n < 2 * MIN_SEGMENT:
        return [], floor
    # PELT's candidates, each moved to the nearest commit boundary.
    candidates = sorted({_nearest(boundaries, c) for c in detect_change_points(values)})
    y = np.log(np.asarray(values, dtype=float))
    while True:
        bounds = [0, *candidates, n]
        results: list[tuple[int, ChangePoint, bool]] = []
        for i, start in enumerate(candidates):
            a, b = y[bounds[i]:start], y[start:bounds[i + 2]]
            if len(a) < MIN_SEGMENT or len(b) < MIN_SEGMENT:
                results.append((start, ChangePoint(start, 0, 0, 0), False))
                continue
            diff, half, p = _welch(a, b, noise)
            before, after = float(np.exp(np.median(a))), float(np.exp(np.median(b)))
            change = math.expm1(diff)
            cp = ChangePoint(start, before, after, change, math.expm1(diff - half), math.expm1(diff + half), p,
                             len(a), len(b), len(b) < CONFIRM_RUNS)
            results.append((start, cp, p < alpha and abs(change) > floor))
        rejected = [(r[1].p if not math.isnan(r[1].p) else 1.0, r[0]) for r in results if not r[2]]
        if not rejected:
            return [cp for _, cp, _ in results], floor
        # Drop the weakest candidate and test the rest again: its neighbours' levels now merge.
        candidates.remove(max(rejected)[1])


def load_history(root: Path, metric: str = "throughput", *, skip_invalid: bool = False,
                 calibration: CalibrationDoc | None = None) -> History:
    """Read every results file under ``root``, order the runs by time and build one series per
    case and environment fingerprint. A file that cannot be read is an error (a trend drawn
    without it would hide it), unless ``skip_invalid``: then it is skipped and listed.
    ``calibration``: the noise floor from ``bench aa`` (else each series' own)."""
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
            rel = case.metrics.relative if metric == "throughput" and case.metrics is not None else None
            points.setdefault((case.id, key), []).append(Point(
                order, run.label, str(run.path), _time(run).isoformat(), commit_label(run), value,
                (float(ci[0]), float(ci[1])) if ci and ci[0] is not None and ci[1] is not None else None,
                raw=value, relative=rel.median if rel is not None else None,
                relative_source=(rel.source or "round") if rel is not None else None))
    series = []
    for (case_id, key), pts in points.items():
        # Ratios to references measured in different places are different quantities (a companion
        # runs at the case's thread count): relative only where every run's came from one source.
        relative = all(p.relative is not None for p in pts) and len({p.relative_source for p in pts}) == 1
        if relative:
            pts = [replace(p, value=p.relative, ci95=None) for p in pts if p.relative is not None]
        given = calibration.floor(case_id) if calibration is not None else None
        found, floor = find_change_points([p.value for p in pts], [p.commit for p in pts], floor=given)
        source = (f"`bench aa` calibration of {calibration.created[:10]}" if given is not None and calibration
                  else "twice the series' own noise")
        series.append(Series(case_id, key, pts, found, relative, floor, source))
    series.sort(key=lambda s: (s.case_id, s.points[0].time))
    return History(root, runs, series, skipped, warnings)


# --- the page ----------------------------------------------------------------------------------

def _figure(case_id: str, series: list[Series]) -> go.Figure:
    import plotly.graph_objects as go

    from bench.report.figures import THEME, esc

    fig = go.Figure()
    many = len(series) > 1
    relative = any(s.relative for s in series)
    # The x axis is the runs' order in time, labelled with their commits: runs of one commit stay
    # apart, and series of different machines line up by when they ran.
    ticks = sorted({(p.order, p.commit) for s in series for p in s.points})
    for i, s in enumerate(series):
        what = "relative" if s.relative else "raw"
        name = esc(f"{s.fingerprint} ({what})" if many else f"throughput ({what})") or "unknown environment"
        hover = [f"{esc(p.run_label)}<br>commit {esc(p.commit)}<br>{esc(p.time)}<br>raw {p.raw:,.4g} samples/s"
                 for p in s.points]
        lows = [p.value - p.ci95[0] if p.ci95 else 0 for p in s.points]
        highs = [p.ci95[1] - p.value if p.ci95 else 0 for p in s.points]
        unit = "x reference" if s.relative else "samples/s"
        fig.add_trace(go.Scatter(
            x=[p.order for p in s.points], y=[p.value for p in s.points], mode="lines+markers", name=name,
            legendgroup=str(i), text=hover, hovertemplate=f"%{{y:.4~s}} {unit}<br>%{{text}}<extra></extra>",
            error_y={"type": "data", "symmetric": False, "array": highs, "arrayminus": lows, "thickness": 1},
        ))
        if s.relative:
            # Raw throughput beside it, on its own axis: what the reference hides shows here.
            fig.add_trace(go.Scatter(
                x=[p.order for p in s.points], y=[p.raw for p in s.points], mode="lines+markers", yaxis="y2",
                name=esc(f"{s.fingerprint} (raw)" if many else "raw throughput"), legendgroup=str(i),
                line={"dash": "dot", "width": 1}, marker={"size": 4}, opacity=0.6,
                hovertemplate="%{y:.4~s} samples/s (raw)<extra></extra>"))
        # The noise band: each level's median +- the noise floor a change point had to exceed.
        bounds = [0, *[c.index for c in s.change_points], len(s.points)]
        for a, b in pairwise(bounds):
            level = sorted(p.value for p in s.points[a:b])[(b - a) // 2]
            fig.add_shape(type="rect", x0=s.points[a].order - 0.4, x1=s.points[b - 1].order + 0.4,
                          y0=level * (1 - s.noise_floor), y1=level * (1 + s.noise_floor), line={"width": 0},
                          fillcolor="#0072B2", opacity=0.10, layer="below")
        if s.change_points:
            cps = s.change_points
            fig.add_trace(go.Scatter(
                x=[s.points[c.index].order for c in cps], y=[s.points[c.index].value for c in cps],
                mode="markers", name="change point", legendgroup=str(i), showlegend=i == 0,
                marker={"symbol": ["x-open" if c.tentative else "x-thin" for c in cps], "size": 16,
                        "line": {"width": 3, "color": "#c62828"}},
                text=[f"{'tentative ' if c.tentative else ''}change point {c.change:+.1%} "
                      f"[{c.low:+.1%}, {c.high:+.1%}]<br>median {c.before:.4g} → {c.after:.4g}<br>"
                      f"{c.runs_before} runs before, {c.runs_after} after; p = {c.p:.2g}<br>"
                      f"commit {esc(s.points[c.index].commit)}" for c in cps],
                hovertemplate="%{text}<extra></extra>",
            ))
    layout: dict[str, object] = {}
    if relative:
        layout["yaxis2"] = {"title": {"text": "raw samples/s"}, "overlaying": "y", "side": "right", "showgrid": False}
    fig.update_layout(template=THEME, title={"text": esc(case_id)}, height=360,
                      yaxis_title="throughput relative to the reference" if relative else "samples/s",
                      xaxis_title="commit (runs oldest first)", hovermode="closest",
                      xaxis={"tickmode": "array", "tickvals": [t[0] for t in ticks],
                             "ticktext": [esc(t[1][:7] + ("*" if t[1].endswith("+dirty") else "")) for t in ticks]},
                      **layout)
    return fig


def to_json(history: History) -> dict[str, object]:
    """Every change point, for CI to act on: the case, the runs and commits before and after it,
    the change with its interval, and whether it is tentative."""
    def run(p: Point) -> dict[str, object]:
        return {"order": p.order, "label": p.run_label, "commit": p.commit, "time": p.time, "path": p.path}

    points = []
    for s in history.series:
        for c in s.change_points:
            points.append({
                "case_id": s.case_id, "metric": "throughput", "values": "relative" if s.relative else "raw",
                "fingerprint": s.fingerprint, "change": c.change, "ci95": [c.low, c.high], "p": c.p,
                "before": c.before, "after": c.after, "run_before": run(s.points[c.index - 1]),
                "run_after": run(s.points[c.index]), "runs_before": c.runs_before, "runs_after": c.runs_after,
                "tentative": c.tentative, "noise_floor": s.noise_floor})
    return finite({"root": str(history.root), "runs": len(history.runs), "skipped": history.skipped,
                   "series": [{"case_id": s.case_id, "fingerprint": s.fingerprint, "runs": len(s.points),
                               "values": "relative" if s.relative else "raw", "noise_floor": s.noise_floor,
                               "floor_source": s.floor_source, "change_points": len(s.change_points)}
                              for s in history.series],
                   "change_points": points})


def write_json(history: History, out: Path) -> Path:
    import json

    return write_output(out, json.dumps(to_json(history), indent=1, allow_nan=False) + "\n")


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
Values are throughput relative to the machine-speed reference measured with every trial (in a CPU case's own
process) where every run of a series has it, measured in the same place (the drift common to the reference and the case cancels; a change that slows both, such as a
torch upgrade, shows in the raw throughput drawn beside it), raw throughput otherwise. Change points (✕;
open: tentative, fewer than {{ confirm }} runs after it) mark where a new level starts: PELT candidates
moved to commit boundaries (runs of one commit are repeats), each kept only when the levels' runs differ
significantly (Welch, p &lt; {{ alpha }}, at least {{ min_segment }} runs a side) and by more than the noise
floor (shaded band). Runs on different environments are separate series.</p>
{% if skipped %}<p>Skipped {{ skipped | length }} unreadable file(s):</p><ul>
{% for s in skipped %}<li>{{ s }}</li>{% endfor %}</ul>{% endif %}
<table><tr><th>case</th><th>environment</th><th>runs</th><th>values</th><th>noise floor</th><th>change points</th></tr>
{% for s in series %}<tr><td>{{ s.case_id }}</td><td>{{ s.fingerprint }}</td><td>{{ s.points | length }}</td>
<td>{{ "relative" if s.relative else "raw" }}</td><td>±{{ "%.1f%%" | format(s.noise_floor * 100) }} ({{ s.floor_source }})</td>
<td class="cp">{% for c in s.change_points %}{{ "%+.1f%%" | format(c.change * 100) }}
[{{ "%+.1f" | format(c.low * 100) }}, {{ "%+.1f" | format(c.high * 100) }}] at {{ s.points[c.index].commit }}
({{ c.runs_before }} runs before, {{ c.runs_after }} after{{ ", tentative" if c.tentative }})
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
        figures=figures, min_segment=MIN_SEGMENT, confirm=CONFIRM_RUNS, alpha=ALPHA, plotly_version=plotly.offline.get_plotlyjs_version(),
        plotlyjs=plotly.offline.get_plotlyjs() if inline_plotlyjs else None)


def write_history(history: History, out: Path, *, inline_plotlyjs: bool = True) -> Path:
    return write_output(out, render_history(history, inline_plotlyjs=inline_plotlyjs))

