"""`bench compare` as a user (or CI) runs it, on the committed result files in tests/data/compare
(made by make_fixtures.py there from two real runs): exit codes, the Markdown summary, the JSON
output, the environment guard and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import bench

DATA = Path(__file__).parent / "data" / "compare"


def test_compare_exits_zero_on_an_a_a_pair_and_says_so_in_markdown(tmp_path: Path) -> None:
    proc = bench("compare", DATA / "base.json", DATA / "same.json", "--markdown", tmp_path / "s.md")
    assert proc.returncode == 0, proc.stderr
    assert "0 regression, 0 improvement, 1 inconclusive, 1 unchanged" in proc.stdout
    md = (tmp_path / "s.md").read_text()
    assert "✅ **no regression** (1 inconclusive, 1 unchanged)" in md
    assert "<details><summary>1 unchanged</summary>" in md
    assert proc.stderr == ""


def test_compare_exits_one_on_a_regression_and_names_the_case_change_and_interval(tmp_path: Path) -> None:
    proc = bench("compare", DATA / "base.json", DATA / "slower.json", "--markdown", tmp_path / "r.md",
                 "--json", tmp_path / "r.json")
    assert proc.returncode == 1, proc.stderr
    assert ("Regression: case 'sgd': throughput fell by 11.3% (95% CI -15.1% to -9.9%, p = 3.3e-12 after "
            "Benjamini-Hochberg), from 6,642 to 5,890 samples/s; the rule throughput:-5% fails when throughput "
            "drops by 5.0% or more.") in " ".join(proc.stdout.split())
    md = (tmp_path / "r.md").read_text().splitlines()
    assert md[2] == "🔴 **1 regression(s)** (1 inconclusive)"
    rows = [line for line in md if line.startswith("| sgd") or line.startswith("| adam")]
    assert rows == [
        "| sgd | throughput | 6,642 | 5,890 | -11.3% | -15.1% to -9.9% | 3.3e-12 | 🔴 regression |",
        "| adam | throughput | 3,311 | 3,194 | -3.5% | -5.3% to -2.5% | 6.3e-08 | 🟡 inconclusive |",
    ]
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["regression"] is True
    assert doc["counts"] == {"regression": 1, "improvement": 0, "inconclusive": 1, "unchanged": 0}
    sgd = next(r for r in doc["rows"] if r["case_id"] == "sgd")
    assert sgd["verdict"] == "regression" and sgd["rule"] == "throughput:-5%"
    assert sgd["change"] == pytest.approx(-0.1132, abs=5e-4)
    assert sgd["n_base"] == 30 and sgd["n_new"] == 41


def test_compare_writes_the_html_report_with_its_comparison_view(tmp_path: Path) -> None:
    out = tmp_path / "compare.html"
    proc = bench("compare", DATA / "base.json", DATA / "slower.json", "--html", out)
    assert proc.returncode == 1, proc.stderr
    page = out.read_text()
    assert 'id="view-comparison"' in page
    assert "regression" in page and "-11.3%" in page


def test_a_looser_rule_turns_the_regression_into_a_pass() -> None:
    proc = bench("compare", DATA / "base.json", DATA / "slower.json", "--fail-on", "throughput:-20%")
    assert proc.returncode == 0, proc.stdout
    assert "1 regression" not in proc.stdout


def test_compare_warns_about_a_different_environment_and_strict_env_exits_two() -> None:
    loose = bench("compare", DATA / "base.json", DATA / "other_env.json")
    assert loose.returncode == 0
    assert "warning: environments differ: CPU model: Intel(R) Xeon(R) Processor → AMD EPYC 9654" in loose.stderr
    assert "warning: environments differ: torch: 2.14.1+cu130 → 2.15.0" in loose.stderr
    strict = bench("compare", DATA / "base.json", DATA / "other_env.json", "--strict-env")
    assert strict.returncode == 2
    last = strict.stderr.strip().splitlines()[-1]
    assert last == ("bench: --strict-env: the runs' environments differ: CPU model: Intel(R) Xeon(R) Processor → "
                    "AMD EPYC 9654; torch: 2.14.1+cu130 → 2.15.0")


@pytest.mark.parametrize(("new", "message"), [
    ("truncated.json", "truncated.json: line 299, column 21: not valid JSON: Expecting ',' delimiter"),
    ("disjoint.json", "disjoint.json: cases: no case id in common with "),
    ("missing.json", "missing.json: no such results file"),
])
def test_bad_or_unrelated_input_gives_one_line_and_exit_two(new: str, message: str) -> None:
    proc = bench("compare", DATA / "base.json", DATA / new)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("bench: ") and message in proc.stderr


def test_an_unwritable_summary_file_gives_one_line_and_exit_two(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = bench("compare", DATA / "base.json", DATA / "same.json", "--markdown", blocker / "summary.md")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bench: {blocker / 'summary.md'}: cannot write (")


def test_a_malformed_rule_gives_one_line_and_exit_two() -> None:
    proc = bench("compare", DATA / "base.json", DATA / "same.json", "--fail-on", "speed:-5%")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("bench: --fail-on 'speed:-5%': unknown metric 'speed' (choose from: "
                                   "cuda_peak_allocated_mb, cuda_peak_reserved_mb, peak_rss_mb, step_time_ms, "
                                   "step_time_p95_ms, throughput)")


def test_compare_and_history_have_help() -> None:
    for command in ("compare", "history"):
        proc = bench(command, "--help")
        assert proc.returncode == 0
        assert proc.stdout.startswith(f"usage: bench {command} ")
    assert "--fail-on METRIC:±N%" in bench("compare", "--help").stdout
