"""The HTML report as data and markup: which views appear for which results, what they say,
escaping, self-containment, links and size. (Rendering in a browser: test_report_browser.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import plotly.offline
import pytest
from test_report_synthetic import EVIL, make_doc, slower_copy, write_doc

from bench.labels import axis_labels
from bench.report import build_views, plotly_cdn_url, render, write_report
from bench.report.resources import measured_spans
from bench.results import load_run, load_runs

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
    assert view_keys(html) == ["summary", "throughput", "step-time", "memory", "flops"]
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
    titles = [json.loads(b.spec)["layout"]["title"]["text"] for b in view.blocks if b.kind == "figure"]
    assert titles == ["Throughput by optimizer", "Throughput by activation",
                      "Throughput: small multiples by optimizer"]
    first = json.loads(view.blocks[0].spec)  # type: ignore[union-attr]
    assert [t["name"] for t in first["data"]] == ["sgd", "sgd momentum=0.9", "adam"]
    assert first["data"][0]["error_x"]["array"][0] > 0  # the 95% CI is drawn


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
    # The worst case: every case with GPU telemetry, CUDA memory, FLOPs and raw samples.
    run = load_run(write_doc(tmp_path / "big", make_doc(1000, n_samples=100)))
    html = render([run])
    above = len(html.encode()) - len(plotly.offline.get_plotlyjs().encode())
    assert above <= 2_000_000, f"{above / 1e6:.2f} MB above plotly.js"
    assert len(table_rows(html, "results")) == 1000


def test_configuration_objects_are_labelled_by_what_differs_between_cases() -> None:
    labels = axis_labels([{"name": "sgd", "kwargs": {}}, {"name": "sgd", "kwargs": {"momentum": 0.9}},
                          {"name": "adam", "kwargs": {}}, {"name": "sgd", "kwargs": {}}])
    assert labels == ["sgd", "sgd momentum=0.9", "adam", "sgd"]
    assert axis_labels([{"name": "loader", "num_workers": 0}, {"name": "loader", "num_workers": 4}]) == [
        "loader num_workers=0", "loader num_workers=4"]
    assert axis_labels([64, 128, 64]) == ["64", "128", "64"]


def test_touching_timing_windows_merge_into_one_measured_band() -> None:
    assert measured_spans([0.0, 0.1, 0.2, 1.0], [0.1, 0.1, 0.1, 0.1]) == [(0.0, 0.30000000000000004), (1.0, 1.1)]
