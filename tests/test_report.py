"""The HTML report as data and markup: which views appear for which results, what they say,
escaping, self-containment, links and size. (Rendering in a browser: test_report_browser.py.)"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import plotly.offline
import pytest
from test_report_synthetic import EVIL, make_doc, slower_copy, write_doc

from bench.labels import axis_labels
from bench.records import CaseRecord
from bench.report import build_views, plotly_cdn_url, render, write_report
from bench.report.model import Bullets, FigureBlock, Note, Section, Switcher, Table, View
from bench.report.resources import measured_spans
from bench.results import Run, load_run, load_runs

ALL_SINGLE_RUN_VIEWS = ["summary", "throughput", "step-time", "scaling", "memory", "gpu", "profile", "flops"]


def view_keys(html: str) -> list[str]:
    return re.findall(r'<section class="view" id="view-([a-z-]+)"', html)


def table_rows(html: str, table_id: str) -> list[list[str]]:
    """Cell texts of a table's body rows (tags stripped, entities left as written)."""
    start = html.index(f'id="{table_id}"')
    body = html[html.index("<tbody>", start):html.index("</tbody>", start)]
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_doc(tmp_path_factory.mktemp("gpu") / "gpu-run", make_doc(12))


def test_report_of_a_real_cpu_run_shows_the_views_a_cpu_can_fill(smoke_run: Any) -> None:
    html = render([load_run(smoke_run.out)], inline_plotlyjs=False)
    # A run in randomized rounds (results version 2) adds the paired effects and the trials.
    assert view_keys(html) == ["summary", "effects", "throughput", "trials", "step-time", "anatomy", "memory", "flops"]
    rows = table_rows(html, "results")
    assert sorted(row[0] for row in rows) == ["cnn-adam", "cnn-sgd", "mlp-adam", "mlp-sgd"]
    # The swept parameters are columns of their own; the shared ones are listed once.
    header = html[html.index('id="results"'):html.index("</thead>", html.index('id="results"'))]
    assert ">model</button>" in header and ">optimizer</button>" in header
    assert ">activation</button>" not in header
    assert "Parameters shared by every case" in html


def test_report_with_gpu_collectors_and_scaling_shows_every_single_run_view(gpu_run: Path) -> None:
    html = render([load_run(gpu_run)], inline_plotlyjs=False)
    assert view_keys(html) == ALL_SINGLE_RUN_VIEWS


def test_throughput_is_charted_by_every_swept_parameter_with_small_multiples(gpu_run: Path) -> None:
    (view,) = [v for v in build_views([load_run(gpu_run)]) if v.key == "throughput"]
    figures = [json.loads(b.spec) for b in view.blocks if isinstance(b, FigureBlock)]
    assert [f["layout"]["title"]["text"] for f in figures] == [
        "Throughput by optimizer", "Throughput by activation", "Throughput: small multiples by optimizer"]
    first = figures[0]
    assert [t["name"] for t in first["data"]] == ["sgd", "sgd momentum=0.9", "adam"]
    assert first["data"][0]["error_x"]["array"][0] > 0  # the 95% CI is drawn
    assert "xaxis2" not in first["layout"]  # cases of one scale share one axis


def test_failed_and_skipped_cases_are_listed_with_their_reasons(gpu_run: Path) -> None:
    html = render([load_run(gpu_run)], inline_plotlyjs=False)
    caption = "Failed and skipped cases (2)"
    assert caption in html
    section = html[html.index(caption):]
    assert "CUDA out of memory. Tried to allocate 2.00 GiB" in section
    assert "needs a CUDA device" in section
    assert "Traceback (most recent call last)" in section
    assert "py-spy: permission denied (ptrace)" in html  # a collector's error is shown too


def test_scaling_view_lists_efficiency_per_world_size_for_dp_and_ddp(gpu_run: Path) -> None:
    (view,) = [v for v in build_views([load_run(gpu_run)]) if v.key == "scaling"]
    fig = json.loads(view.blocks[0].spec)  # type: ignore[union-attr]
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert titles == ["DP: throughput", "DDP: throughput", "DP: parallel efficiency", "DDP: parallel efficiency"]
    ideal = [t for t in fig["data"] if t["name"] == "ideal (linear)"]
    assert ideal[0]["y"] == [1000, 2000, 4000, 8000]
    rows = view.blocks[1].rows  # type: ignore[union-attr]
    assert [(r[1].text, r[3].text, r[6].text) for r in rows[:2]] == [("dp", "1", "100.0"), ("dp", "2", "84.7")]


def test_report_over_two_runs_compares_each_case_with_the_first_run(smoke_run: Any, tmp_path: Path) -> None:
    slower = slower_copy(smoke_run.out / "results.json", tmp_path / "slower", 0.8)
    html = render(load_runs([smoke_run.out, slower]), inline_plotlyjs=False)
    assert view_keys(html)[-1] == "comparison"
    rows = table_rows(html, re.findall(r'id="(table-\d+)"', html[html.index('id="view-comparison"'):])[0])
    assert len(rows) == 4
    assert {row[4] for row in rows} == {"-20.0%"}  # plain ratio, no verdict without statistics
    assert "no significance test was applied" in html


def test_comparison_cells_take_the_verdict_of_the_supplied_comparisons(tmp_path: Path) -> None:
    base = load_run(write_doc(tmp_path / "base", make_doc(4, problems=False)))
    new = load_run(write_doc(tmp_path / "new", make_doc(4, problems=False, speed=0.9)))
    ids = [c.id for c in base.cases]

    def row(case_id: str, change: float, verdict: str) -> SimpleNamespace:
        return SimpleNamespace(case_id=case_id, metric="throughput", base=100.0, new=100 * (1 + change),
                               change=change, ci95=(change - 0.01, change + 0.01), p_value=0.001, verdict=verdict,
                               message=f"throughput {verdict}")

    comparison = SimpleNamespace(new_label="new", rows=[row(ids[0], -0.10, "regression"),
                                                        row(ids[1], 0.12, "improvement"),
                                                        row(ids[2], 0.001, "unchanged")])
    html = render([base, new], inline_plotlyjs=False, comparisons=[comparison])
    assert re.search(r'<td class="verdict-regression" data-sort="-0.1" title="throughput regression; '
                     r'95% CI of the change: -11.0% to -9.0%; p = 0.001">-10.0% regression</td>', html)
    assert 'class="verdict-improvement"' in html and 'class="verdict-unchanged"' in html
    (view,) = [v for v in build_views([base, new], comparisons=[comparison]) if v.key == "comparison"]
    bars = json.loads(view.blocks[0].spec)["data"][0]  # type: ignore[union-attr]
    assert bars["marker"]["color"] == ["#c62828", "#2e7d32", "#9e9e9e"]


def test_every_string_from_a_results_file_is_escaped(tmp_path: Path) -> None:
    html = render([load_run(write_doc(tmp_path / "evil", make_doc(6, evil=True)))], inline_plotlyjs=False)
    assert "<img" not in html
    assert html.count(EVIL.replace("<", "&lt;").replace(">", "&gt;")) >= 3  # suite, case id, error: as text
    # Inside figure JSON it is escaped twice over: for plotly's HTML-like labels and for <script>.
    assert "\\u0026lt;img src=x onerror=alert(1)\\u0026gt;" in html


def test_an_inlined_report_refers_to_no_other_host(gpu_run: Path) -> None:
    html = render([load_run(gpu_run)])
    markup = html.replace(plotly.offline.get_plotlyjs(), "")
    assert len(html) - len(markup) > 3_000_000  # plotly.js is inlined
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", markup)


def test_link_plotlyjs_loads_the_matching_plotlyjs_from_its_cdn(gpu_run: Path) -> None:
    html = render([load_run(gpu_run)], inline_plotlyjs=False)
    assert f'<script src="{plotly_cdn_url()}"></script>' in html
    assert plotly_cdn_url() == f"https://cdn.plot.ly/plotly-{plotly.offline.get_plotlyjs_version()}.min.js"
    assert len(html) < 500_000


def test_links_to_profiles_and_logs_are_relative_to_the_report_file(tmp_path: Path) -> None:
    doc = make_doc(6)
    doc["cases"][0]["collectors"]["torch_profiler"]["traces"] = ["traces/a b.json", "javascript:alert(1)"]
    results = write_doc(tmp_path / "results" / "run", doc)
    (results.parent / "traces").mkdir()
    (results.parent / "traces" / "a b.json").write_text("{}")
    out = write_report([load_run(results)], tmp_path / "site" / "report.html", inline_plotlyjs=False)
    html = out.read_text()
    assert '<a href="../results/run/traces/a%20b.json">traces/a b.json</a>' in html
    # A name that looks like a URL scheme stays a path; missing files are marked as such.
    assert 'class="missing" title="file not found when the report was built"><a href="../results/run/javascript%3Aalert%281%29">' in html
    failed_id = doc["cases"][-1]["id"]
    assert f'href="../results/run/logs/{failed_id}.log"' in html


def test_profile_view_links_the_files_every_ddp_rank_saved(tmp_path: Path) -> None:
    doc = make_doc(6)
    case = doc["cases"][0]
    case["collectors"]["torch_profiler"]["traces"] = ["profiles/c/rank0.pt.trace.json.gz"]
    case["ranks"] = [{"rank": 0, "files": ["profiles/c/rank0.pt.trace.json.gz"]},
                     {"rank": 1, "files": ["profiles/c/rank1.pt.trace.json.gz", "profiles/c/pyspy.rank1.svg"]}]
    out = write_report([load_run(write_doc(tmp_path / "run", doc))], tmp_path / "report.html", inline_plotlyjs=False)
    html = out.read_text()
    assert html.count(">profiles/c/rank0.pt.trace.json.gz</a>") == 1, "the writer's trace is listed once"
    assert "rank 1: torch profiler trace (open in Perfetto or chrome://tracing)" in html
    assert "rank 1: py-spy flame graph (SVG)" in html
    assert ">profiles/c/pyspy.rank1.svg</a>" in html


def test_a_thousand_case_report_stays_within_two_megabytes_above_plotlyjs(tmp_path: Path) -> None:
    # The worst case: every case with GPU telemetry, CUDA memory, FLOPs, raw samples and trials in
    # rounds (each case's trials in the Trials view, the paired effects).
    run = load_run(write_doc(tmp_path / "big", make_doc(1000, n_samples=100, version=2)))
    html = render([run])
    above = len(html.encode()) - len(plotly.offline.get_plotlyjs().encode())
    assert above <= 2_000_000, f"{above / 1e6:.2f} MB above plotly.js"
    assert len(table_rows(html, "results")) == 1000
    trials = html[html.index('id="view-trials"'):]
    assert trials[:trials.index("</select>")].count("<option") == 998  # every measured case


def test_configuration_objects_are_labelled_by_what_differs_between_cases() -> None:
    labels = axis_labels([{"name": "sgd", "kwargs": {}}, {"name": "sgd", "kwargs": {"momentum": 0.9}},
                          {"name": "adam", "kwargs": {}}, {"name": "sgd", "kwargs": {}}])
    assert labels == ["sgd", "sgd momentum=0.9", "adam", "sgd"]
    assert axis_labels([{"name": "loader", "num_workers": 0}, {"name": "loader", "num_workers": 4}]) == [
        "loader num_workers=0", "loader num_workers=4"]
    assert axis_labels([64, 128, 64]) == ["64", "128", "64"]


def test_touching_timing_windows_merge_into_one_measured_band() -> None:
    assert measured_spans([0.0, 0.1, 0.2, 1.0], [0.1, 0.1, 0.1, 0.1]) == [(0.0, 0.30000000000000004), (1.0, 1.1)]


# ---------------------------------------------------------------------------------------------
# A report that answers first: findings, effects, trials, and what every interval covers


def view_of(runs: list[Run], key: str) -> View:
    (view,) = [v for v in build_views(runs) if v.key == key]
    return view


def specs(blocks: list[Any]) -> list[dict[str, Any]]:
    """The figures of some blocks (folded sections opened), as plotly JSON."""
    out = []
    for b in blocks:
        if isinstance(b, Section):
            out += specs(b.blocks)
        elif isinstance(b, FigureBlock | Switcher):
            out.append(json.loads(b.spec))
    return out


def findings(runs: list[Run]) -> list[Bullets]:
    return [b for b in view_of(runs, "summary").blocks if isinstance(b, Bullets) and b.cls == "findings"]


@pytest.fixture(scope="module")
def v2_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return load_run(write_doc(tmp_path_factory.mktemp("v2") / "v2-run", make_doc(12, version=2)))


def test_findings_come_first_and_name_the_fastest_and_slowest_cases_with_their_intervals(v2_run: Run) -> None:
    summary = view_of([v2_run], "summary")
    assert isinstance(summary.blocks[0], Bullets) and summary.blocks[0].title == "Findings"
    measured = sorted((c for c in v2_run.cases if c.metrics), key=lambda c: c.metrics.throughput.median)  # type: ignore[union-attr]

    def said(case: CaseRecord) -> str:
        assert case.metrics is not None
        thr = case.metrics.throughput
        assert thr.ci95[0] is not None and thr.ci95[1] is not None
        return (f"{case.id} at {thr.median:,.0f} samples/s (95% interval {thr.ci95[0]:,.0f}\u2013"
                f"{thr.ci95[1]:,.0f} over 8 trials)")

    first = summary.blocks[0].items[0]
    assert first.startswith(f"Fastest: {said(measured[-1])}. Slowest: {said(measured[0])}, ")
    assert first.endswith("x slower.")


def test_findings_give_the_largest_effect_of_each_swept_parameter_with_its_interval(v2_run: Run) -> None:
    (block,) = findings([v2_run])
    for parameter in ("optimizer", "activation"):
        effects = [e for e in v2_run.doc.effects if e.parameter == parameter and e.ratio is not None]
        largest = max(effects, key=lambda e: abs(math.log(e.ratio or 1)))
        assert largest.low is not None and largest.high is not None
        sentence = (f"{parameter}: the largest effect is {largest.value} vs {largest.baseline}, "
                    f"{(largest.ratio or 1) * 100 - 100:+.1f}% (95% interval {largest.low * 100 - 100:+.1f}% to "
                    f"{largest.high * 100 - 100:+.1f}% over 8 rounds, {largest.pairs} pairs): ")
        assert [item for item in block.items if item.startswith(sentence)], sentence


def test_findings_name_the_unstable_case_and_the_cases_that_missed_their_target(v2_run: Run) -> None:
    (block,) = findings([v2_run])
    unstable = v2_run.cases[0]
    assert f"Unstable: 1 case drifted by more than 10% within a trial: {unstable.id} (by up to +14.0%, round 2)." \
        in block.items
    missed = [c for c in v2_run.cases if c.metrics and c.metrics.throughput.ci_target_met is False]
    assert missed  # the synthetic run has noisy cases
    (sentence,) = [item for item in block.items if item.startswith("Missed the interval target")]
    assert sentence.startswith(f"Missed the interval target: {len(missed)} of 10 measured cases; the widest: ")
    assert "against \u00b13.0% asked; the rounds ran out" in sentence
    assert "2 of 12 cases were not measured: 1 failed, 1 skipped" in " ".join(block.items)
    assert block.items[-1] == ("Measured in 8 randomized rounds (order seed 1234): median of trial medians; "
                               "95% order-statistic interval over trials.")


def test_effects_view_tabulates_every_paired_effect_with_its_interval_rounds_and_pairs(v2_run: Run) -> None:
    view = view_of([v2_run], "effects")
    assert "paired within rounds" in view.intro
    (table,) = [b for b in view.blocks if isinstance(b, Table)]
    assert [c.title for c in table.columns] == ["parameter", "value", "baseline", "change", "95% CI", "rounds",
                                                "pairs", "notes"]
    assert len(table.rows) == len(v2_run.doc.effects) == 5
    for row, e in zip(table.rows, v2_run.doc.effects, strict=True):
        assert e.ratio is not None and e.low is not None and e.high is not None
        assert [c.text for c in row[:7]] == [
            e.parameter, e.value, e.baseline, f"{(e.ratio - 1) * 100:+.1f}%",
            f"{(e.low - 1) * 100:+.1f}% to {(e.high - 1) * 100:+.1f}%", str(e.rounds), str(e.pairs)]
        assert row[3].sort == pytest.approx(e.ratio - 1)
    # The failed and skipped cases leave cells without a counterpart: listed, one sentence each.
    (section,) = [b for b in view.blocks if isinstance(b, Section)]
    listed = section.blocks[0]
    assert isinstance(listed, Bullets)
    assert listed.items == [m for e in v2_run.doc.effects for m in e.missing]
    assert "optimizer=adam for activation=gelu: no such case (excluded, failed or skipped)" in listed.items


def test_forest_plot_draws_each_effect_with_its_interval_around_zero_in_a_panel_per_parameter(v2_run: Run) -> None:
    (forest,) = specs(view_of([v2_run], "effects").blocks)
    assert [a["text"] for a in forest["layout"]["annotations"]] == ["optimizer", "activation"]
    optimizer, activation = forest["data"]
    assert optimizer["y"] == ["sgd momentum=0.9 vs sgd", "adam vs sgd"]
    assert activation["y"] == ["tanh vs relu", "gelu vs relu", "sigmoid vs relu"]
    e = v2_run.doc.effects[2]  # tanh vs relu
    assert e.ratio is not None and e.low is not None and e.high is not None
    assert activation["x"][0] == pytest.approx((e.ratio - 1) * 100, rel=1e-3)
    assert activation["error_x"]["arrayminus"][0] == pytest.approx((e.ratio - e.low) * 100, rel=1e-3)
    assert activation["error_x"]["array"][0] == pytest.approx((e.high - e.ratio) * 100, rel=1e-3)
    for axis in ("xaxis", "xaxis2"):  # no change (0%) is in view in every panel
        low, high = forest["layout"][axis]["range"]
        assert low < 0 < high


def test_an_effect_without_a_paired_figure_says_why(tmp_path: Path) -> None:
    doc = make_doc(12, version=2)
    gone = doc["effects"][1]  # optimizer adam vs sgd
    gone.update(ratio=None, low=None, high=None, rounds=0, pairs=0,
                missing=["optimizer=adam for activation=relu: no round in which both it and its baseline ran"])
    doc["effects"] = [e for e in doc["effects"] if e["parameter"] != "optimizer" or e is gone]
    run = load_run(write_doc(tmp_path / "run", doc))
    (block,) = findings([run])
    assert ("optimizer (adam vs sgd): no paired figure: optimizer=adam for activation=relu: no round in which "
            "both it and its baseline ran.") in block.items
    (table,) = [b for b in view_of([run], "effects").blocks if isinstance(b, Table)]
    assert [c.text for c in table.rows[0][:6]] == ["optimizer", "adam", "sgd", "no paired figure", "", "0"]
    (forest,) = specs(view_of([run], "effects").blocks)
    assert [a["text"] for a in forest["layout"]["annotations"]] == ["activation"]  # nothing to draw for optimizer


def test_throughput_of_cases_far_apart_in_scale_gets_a_panel_per_model_with_its_own_axis(tmp_path: Path) -> None:
    # An MLP 100x faster than a CNN: on one axis the CNN's bars and intervals would be invisible.
    run = load_run(write_doc(tmp_path / "run", make_doc(24, version=2, model_speed={"mlp": 50.0})))
    view = view_of([run], "throughput")
    figures = [b for b in view.blocks if isinstance(b, FigureBlock)]
    assert [json.loads(f.spec)["layout"]["title"]["text"] for f in figures] == [
        "Throughput by model", "Throughput by optimizer", "Throughput by activation"]  # no small multiples
    for block in figures:
        fig = json.loads(block.spec)
        assert block.caption.startswith("One panel per model, each with its own x axis: the medians differ ")
        assert [a["text"] for a in fig["layout"]["annotations"]] == ["model = mlp", "model = cnn"]
        assert "matches" not in fig["layout"]["xaxis2"]
        assert {t["xaxis"] for t in fig["data"]} == {"x", "x2"}
    by_optimizer = json.loads(figures[1].spec)
    cnn = [t for t in by_optimizer["data"] if t["xaxis"] == "x2"]
    assert max(x for t in cnn for x in t["x"]) < 2_000 < min(x for t in by_optimizer["data"] if t["xaxis"] == "x"
                                                             for x in t["x"])
    # Error bars keep their meaning: the case's own 95% interval over trials, in samples/s.
    case = next(c for c in run.cases if c.id == "cnn-sgd-relu-bs16")
    assert case.metrics is not None and case.metrics.throughput.ci95[1] is not None
    sgd = next(t for t in cnn if t["name"] == "sgd")
    assert sgd["error_x"]["array"][0] == pytest.approx(
        case.metrics.throughput.ci95[1] - case.metrics.throughput.median, rel=1e-2)
    assert "over %{customdata[2]} trials in randomized rounds" in sgd["hovertemplate"]


def test_world_size_is_a_category_axis_in_the_scaling_view(gpu_run: Path) -> None:
    (fig,) = specs(view_of([load_run(gpu_run)], "scaling").blocks)
    axes = [v for k, v in fig["layout"].items() if k.startswith("xaxis")]
    assert len(axes) == 4
    assert all(a["type"] == "category" and a["categoryarray"] == ["1", "2", "4", "8"] for a in axes)


def test_the_environment_table_comes_folded(gpu_run: Path) -> None:
    (section,) = [b for b in view_of([load_run(gpu_run)], "summary").blocks
                  if isinstance(b, Section) and b.title.startswith("Environment")]
    assert section.open is False and section.title == "Environment fingerprint"
    html = render([load_run(gpu_run)], inline_plotlyjs=False)
    assert '<details class="section">\n  <summary>Environment fingerprint</summary>' in html


def test_trials_view_shows_each_cases_trial_medians_by_round_with_its_interval_band(v2_run: Run) -> None:
    view = view_of([v2_run], "trials")
    (switcher,) = view.blocks
    assert isinstance(switcher, Switcher)
    measured = [c for c in v2_run.cases if c.ok]
    assert switcher.options == [c.id for c in measured]
    spec = json.loads(switcher.spec)
    assert spec["traces"][0]["x"] == list(range(8))  # every round, shared by the cases
    assert spec["layout"]["xaxis"]["dtick"] == 1  # rounds are whole numbers
    first, case = spec["figures"][0], measured[0]
    assert case.trials is not None and case.metrics is not None
    assert first["data"][0]["y"] == pytest.approx([t.median for t in case.trials], rel=1e-3)
    band, median = first["layout"]["shapes"]
    assert [band["y0"], band["y1"]] == pytest.approx(case.metrics.throughput.ci95, rel=1e-3)
    assert median["y0"] == pytest.approx(case.metrics.throughput.median, rel=1e-3)
    # The first case drifted inside its trial of round 2: marked, with by how much.
    assert first["data"][1] == {"x": [2], "y": pytest.approx([case.trials[2].median], rel=1e-3), "customdata": [0.14]}
    assert len(spec["figures"][1]["data"]) == 1
    assert "Crosses: trials whose throughput drifted beyond 10% inside themselves (1 case)." in switcher.caption


def test_every_stated_interval_says_what_it_covers(v2_run: Run, gpu_run: Path) -> None:
    over_trials = ("Intervals: 95% intervals over each case's trials in randomized rounds (8 trials per case): "
                   "median of trial medians; order-statistic interval.")
    summary = view_of([v2_run], "summary")
    (table,) = [b for b in summary.blocks if isinstance(b, Table) and b.id == "results"]
    ci = next(c for c in table.columns if c.title == "95% CI (samples/s)")
    assert ci.help == over_trials
    assert Note(over_trials, cls="intervals") in summary.blocks
    assert "trials" in [c.title for c in table.columns] and "windows" not in [c.title for c in table.columns]
    throughput = view_of([v2_run], "throughput")
    assert throughput.blocks[0] == Note(over_trials, cls="intervals")
    # A version-1 file says its interval is the precision of one stretch.
    v1 = view_of([load_run(gpu_run)], "throughput")
    assert v1.blocks[0] == Note("Intervals: 95% intervals from windows of one stretch (results version 1): "
                                "within-run precision only, not run-to-run.", cls="intervals")
    bars = specs(v1.blocks)[0]["data"][0]
    assert "within one stretch (results version 1)" in bars["hovertemplate"]


def test_a_version_1_report_has_findings_but_no_effects_or_trials(gpu_run: Path) -> None:
    run = load_run(gpu_run)
    keys = [v.key for v in build_views([run])]
    assert "effects" not in keys and "trials" not in keys
    (block,) = findings([run])
    assert block.items[0].startswith("Fastest: ")
    assert not [item for item in block.items if "largest effect" in item or "paired figure" in item]
    assert block.items[-1] == ("Results version 1: each case was measured in one stretch, so its interval is "
                               "within-run precision only (not run to run), and there are no paired effects.")


def test_a_report_over_two_runs_gives_findings_per_run_and_points_to_the_comparison(
        v2_run: Run, gpu_run: Path) -> None:
    runs = [v2_run, load_run(gpu_run)]
    assert [b.title for b in findings(runs)] == ["Findings: v2-run (baseline)", "Findings: gpu-run"]
    notes = [b.text for b in view_of(runs, "summary").blocks if isinstance(b, Note)]
    assert "The Comparison view sets each case of the other runs against the baseline run 'v2-run'." in notes
    # Each run's intervals are said for what they are.
    assert notes[-1].startswith("Intervals: v2-run: 95% intervals over each case's trials in randomized rounds")
    assert "; gpu-run: 95% intervals from windows of one stretch" in notes[-1]


def test_findings_effects_and_trials_of_hostile_names_are_escaped(tmp_path: Path) -> None:
    html = render([load_run(write_doc(tmp_path / "evil", make_doc(6, evil=True, version=2)))], inline_plotlyjs=False)
    assert "<img" not in html
    escaped = EVIL.replace("<", "&lt;").replace(">", "&gt;")
    summary = html[html.index('id="view-summary"'):html.index('id="view-effects"')]
    assert f"<li>Fastest: {escaped} at " in summary or f"Slowest: {escaped} at " in summary
    effects = html[html.index('id="view-effects"'):html.index('id="view-throughput"')]
    assert f"<td>{escaped}</td>" in effects  # the activation's label, in the effects table
    trials = html[html.index('id="view-trials"'):]
    assert "\\u0026lt;img src=x onerror=alert(1)\\u0026gt;" in trials  # the case id as the chart's title
