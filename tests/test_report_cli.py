"""`bench report` as a user runs it: a subprocess over real files, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_report_synthetic import make_doc, write_doc


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("runs")
    return (write_doc(base / "monday", make_doc(6, gpu=False)).parent,
            write_doc(base / "tuesday", make_doc(6, gpu=False, speed=0.8, seed=1)).parent)


def test_report_command_writes_one_page_over_two_runs_labelled_by_folder(
        run_bench: Any, two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "site" / "compare.html"
    result = run_bench("report", two_runs[0], two_runs[1] / "results.json", "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"report: {out}"
    html = out.read_text(encoding="utf-8")
    assert 'data-run="monday"' in html and 'data-run="tuesday"' in html
    assert 'id="view-comparison"' in html
    assert "Cases found in several runs, against the baseline run &#39;monday&#39;." in html


def test_report_command_names_runs_with_label_options(run_bench: Any, two_runs: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = run_bench("report", *two_runs, "--out", out, "--label", "before", "--label", "after",
                       "--link-plotlyjs")
    assert result.returncode == 0, result.stderr
    html = out.read_text(encoding="utf-8")
    assert 'data-run="before"' in html and 'data-run="after"' in html
    assert "https://cdn.plot.ly/plotly-" in html
    assert out.stat().st_size < 1_000_000  # plotly.js linked, not inlined


def test_report_command_refuses_a_label_count_that_does_not_match(run_bench: Any, two_runs: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    result = run_bench("report", *two_runs, "--out", out, "--label", "only-one")
    assert result.returncode == 2
    assert result.stderr_lines == ["bench: --label: 1 label(s) for 2 results file(s); give one per file"]
    assert not out.exists()


def _truncated(path: Path) -> None:
    text = json.dumps(make_doc(3, gpu=False))
    path.write_text(text[: len(text) // 2], encoding="utf-8")


def _not_json(path: Path) -> None:
    path.write_text("<html>this is a report, not results</html>", encoding="utf-8")


def _future_version(path: Path) -> None:
    path.write_text(json.dumps({**make_doc(3, gpu=False), "schema_version": 99}), encoding="utf-8")


@pytest.mark.parametrize(("spoil", "message"), [
    (_not_json, "line 1, column 1: not valid JSON"),
    (_truncated, "not valid JSON"),
    (_future_version, "schema_version: 99 is not supported"),
])
def test_a_bad_results_file_is_named_in_one_line_and_nothing_is_written(
        run_bench: Any, two_runs: tuple[Path, Path], tmp_path: Path, spoil: Any, message: str) -> None:
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    spoil(bad)
    out = tmp_path / "out" / "report.html"
    result = run_bench("report", two_runs[0], bad, "--out", out)
    assert result.returncode == 2
    assert len(result.stderr_lines) == 1
    assert result.stderr_lines[0].startswith(f"bench: {bad}: ")
    assert message in result.stderr_lines[0]
    assert result.stdout == ""
    assert not out.parent.exists()


def test_a_truncated_results_file_says_it_may_be_truncated(run_bench: Any, tmp_path: Path) -> None:
    bad = tmp_path / "results.json"
    _truncated(bad)
    result = run_bench("report", bad, "--out", tmp_path / "r.html")
    assert result.returncode == 2
    assert "truncated" in result.stderr


def test_report_over_two_runs_colours_the_comparison_by_the_statistical_verdict(
        run_bench: Any, tmp_path: Path) -> None:
    # Committed real runs: 'slower' is a planted ~10% slowdown of 'sgd' against 'base'.
    data = Path(__file__).parent / "data" / "compare"
    out = tmp_path / "r.html"
    result = run_bench("report", data / "base.json", data / "slower.json", "--out", out)
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert "-11.3% regression" in html
    assert "-3.5% inconclusive" in html  # 'adam' moved less than its interval can tell
