"""HTML reports: one self-contained page (plotly.js inlined) built from one or more results files.

Each view is a function of the loaded runs that returns plain data (``model.View``), or None when
the results hold nothing for it; plotly makes the figures, and a jinja2 template with autoescaping
lays out the page, so every string from a suite, a results file or an error is shown as text,
never interpreted as HTML.

Views, in page order: summary (findings first), effects, throughput, trials, step time, anatomy, scaling,
memory, GPU telemetry, profile, FLOPs, comparison (two or more runs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from bench.errors import UsageError
from bench.report import (
    anatomy,
    comparison,
    effects,
    performance,
    profile,
    resources,
    scaling,
    summary,
    trials,
)
from bench.report.figures import CONFIG
from bench.report.model import ComparisonLike, Context, View, ViewBuilder, case_rows, sort_text
from bench.results import Run, write_output

VIEWS: tuple[ViewBuilder, ...] = (
    summary.build, effects.build, performance.build_throughput, trials.build, performance.build_step_time,
    anatomy.build, scaling.build, resources.build_memory, resources.build_telemetry, profile.build,
    resources.build_flops, comparison.build,
)


def build_views(runs: Sequence[Run], *, html_dir: Path | None = None,
                comparisons: Sequence[ComparisonLike] | None = None) -> list[View]:
    """The views that have data, in page order. ``comparisons[i]`` compares ``runs[i + 1]`` with
    ``runs[0]`` (objects with ``.rows`` as made by ``bench.compare.compare_runs``)."""
    ctx = Context(list(runs), case_rows(list(runs)), html_dir,
                  list(comparisons) if comparisons is not None else None)
    return [view for build in VIEWS if (view := build(ctx)) is not None]


def relabel(runs: Sequence[Run], labels: Sequence[str]) -> list[Run]:
    """The runs under the names a user gave (``--label``), one per run, all different."""
    if len(labels) != len(runs):
        raise UsageError(f"--label: {len(labels)} label(s) for {len(runs)} results file(s); give one per file")
    if len(set(labels)) < len(labels):
        raise UsageError(f"--label: labels must differ (got {', '.join(labels)})")
    return [dataclasses.replace(run, label=label) for run, label in zip(runs, labels, strict=True)]


def plotly_cdn_url() -> str:
    import plotly.offline

    return f"https://cdn.plot.ly/plotly-{plotly.offline.get_plotlyjs_version()}.min.js"


def render(runs: Sequence[Run], *, inline_plotlyjs: bool = True, html_dir: Path | None = None,
           comparisons: Sequence[ComparisonLike] | None = None, lead: Sequence[View] = (),
           title: str | None = None) -> str:
    """The report page as a string. ``html_dir`` is the folder the page will be saved in, so that
    links to traces and logs (named relative to each results folder) resolve from there; by
    default the page is assumed to sit in each run's results folder. ``lead``: views made by the
    caller (``bench ab``'s verdicts), shown first."""
    import jinja2
    import plotly.offline

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["sort_text"] = sort_text
    views = [*lead, *build_views(runs, html_dir=html_dir, comparisons=comparisons)]
    title = title or ", ".join(dict.fromkeys(run.doc.suite.name for run in runs))
    return env.get_template("report.html.j2").render(
        title=title, runs=runs, views=views, plotly_config=CONFIG,
        plotlyjs=plotly.offline.get_plotlyjs() if inline_plotlyjs else None,
        plotlyjs_url=None if inline_plotlyjs else plotly_cdn_url(),
    )


def write_report(runs: Sequence[Run], out: Path, *, inline_plotlyjs: bool = True,
                 comparisons: Sequence[ComparisonLike] | None = None) -> Path:
    """Render and write the page atomically: a failure leaves no file (or the previous one)."""
    html = render(runs, inline_plotlyjs=inline_plotlyjs, html_dir=out.absolute().parent, comparisons=comparisons)
    return write_output(out, html)
