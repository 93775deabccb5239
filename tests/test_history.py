"""`bench history`: change points on known series, runs ordered by time and split by environment,
and the trend page, checked as a user runs the command and in a real browser."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import bench

from bench.history import commit_label, detect_change_points, load_history
from bench.records import ResultsDoc

DATA = Path(__file__).parent / "data" / "compare"
EVIL = "<img src=x onerror=alert(1)>"


@pytest.mark.parametrize(("values", "expected"), [
    ([1000.0] * 12, []),                                               # flat
    ([1000.0] * 6 + [900.0] * 6, [6]),                                 # a 10% step
    ([1000.0] * 5 + [700.0] + [1000.0] * 6, []),                       # one odd run is an outlier
    ([1000.0, 1000.0, 1000.0], []),                                    # too short for two levels
    ([1000.0] * 5 + [900.0] * 5 + [1000.0] * 5, [5, 10]),              # a regression, then its fix
])
def test_change_points_mark_where_a_new_level_starts(values: list[float], expected: list[int]) -> None:
    assert detect_change_points(values) == expected


def test_change_points_find_a_ten_percent_step_in_two_percent_noise_and_nothing_in_pure_noise() -> None:
    rng = np.random.default_rng(0)
    found = [detect_change_points(list(1000 * np.exp(rng.normal(0, 0.02, 20)) * ([1.0] * 10 + [0.9] * 10)))
             for _ in range(30)]
    assert sum(10 in f or 9 in f or 11 in f for f in found) >= 29
    quiet = [detect_change_points(list(1000 * np.exp(rng.normal(0, 0.02, 20)))) for _ in range(30)]
    assert sum(bool(q) for q in quiet) <= 3


def _scaled(doc: dict[str, Any], factor: float, time: str, commit: str, **env: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["environment"].update(time=time, git={"commit": commit * 8, "dirty": False}, **env)
    for case in out["cases"]:
        case["samples"]["window_throughput"] = [v * factor for v in case["samples"]["window_throughput"]]
        thr = case["metrics"]["throughput"]
        thr["median"] *= factor
        thr["ci95"] = [v * factor for v in thr["ci95"]]
    return out


@pytest.fixture
def history_dir(tmp_path: Path) -> Path:
    """Ten runs on one machine with a 15% drop from the sixth (folders named out of time order),
    two runs on another CPU, and one broken file."""
    base = json.loads((DATA / "base.json").read_text())
    root = tmp_path / "history"
    for i in range(10):
        doc = _scaled(base, 1.0 if i < 5 else 0.85, f"2026-01-{i + 10:02d}T12:00:00+00:00", f"c{i}")
        folder = root / f"run-{9 - i}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(doc))
    for i in range(2):
        doc = _scaled(base, 2.0, f"2026-01-{i + 12:02d}T13:00:00+00:00", f"d{i}", cpu_model="AMD EPYC 9654")
        doc["cases"][0]["id"] = EVIL if i == 0 else doc["cases"][0]["id"]
        (root / "other-cpu" / str(i)).mkdir(parents=True)
        (root / "other-cpu" / str(i) / "results.json").write_text(json.dumps(doc))
    (root / "broken").mkdir()
    shutil.copy(DATA / "truncated.json", root / "broken" / "results.json")
    return root


def test_history_orders_runs_by_time_and_splits_series_by_environment(history_dir: Path) -> None:
    found = load_history(history_dir, skip_invalid=True)
    assert len(found.runs) == 12
    assert len(found.skipped) == 1 and "broken/results.json: line 299" in found.skipped[0]
    same_machine = [s for s in found.series if "Intel" in s.fingerprint]
    other = [s for s in found.series if "AMD EPYC 9654" in s.fingerprint]
    assert sorted(s.case_id for s in same_machine) == ["adam", "sgd"]
    assert sorted(s.case_id for s in other) == sorted([EVIL, "adam", "sgd"])
    sgd = next(s for s in same_machine if s.case_id == "sgd")
    assert [p.commit for p in sgd.points] == [f"c{i}" * 5 for i in range(10)]
    assert [p.run_label for p in sgd.points] == [f"run-{9 - i}" for i in range(10)]
    assert [c.index for c in sgd.change_points] == [5]
    assert sgd.change_points[0].change == pytest.approx(-0.15)
    assert all(not s.change_points for s in other)


def test_commit_label_is_short_and_marks_local_changes() -> None:
    from bench.results import Run

    def run(git: Any) -> Run:
        doc = json.loads((DATA / "base.json").read_text())
        doc["environment"]["git"] = git
        return Run(Path("x"), "x", ResultsDoc.model_validate(doc))

    assert commit_label(run({"commit": "0123456789abcdef", "dirty": True})) == "0123456789+dirty"
    assert commit_label(run(None)) == "-"


def test_history_cli_writes_a_page_and_reports_what_it_found(history_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "trend.html"
    refused = bench("history", history_dir, "--out", out)
    assert refused.returncode == 2 and not out.exists()
    assert refused.stderr_lines == [f"bench: {history_dir / 'broken' / 'results.json'}: line 299, column 21: "
                                    f"not valid JSON: Expecting ',' delimiter (the file looks truncated)"]
    proc = bench("history", history_dir, "--out", out, "--skip-invalid")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"history: 12 run(s), 5 series, 2 change point(s): {out}"
    assert proc.stderr.startswith("bench: warning: skipped ") and "broken/results.json" in proc.stderr
    page = out.read_text()
    assert EVIL not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert page.count('class="fig"') == 3  # one figure per case id


def test_history_of_a_folder_without_results_exits_two(tmp_path: Path) -> None:
    proc = bench("history", tmp_path, "--out", tmp_path / "t.html")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"bench: {tmp_path}: no results.json found under this folder"


@pytest.mark.browser
def test_trend_page_draws_every_figure_in_a_browser_and_shows_names_as_text(history_dir: Path,
                                                                          tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on PATH")
    out = tmp_path / "trend.html"
    assert bench("history", history_dir, "--out", out, "--skip-invalid").returncode == 0
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(out.as_uri())
        page.wait_for_selector(".fig .main-svg")
        assert page.locator(".js-plotly-plot").count() == 3
        assert page.locator("td", has_text=EVIL).count() == 1
        titles = page.locator(".gtitle").all_text_contents()
        assert EVIL in titles
        markers = page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot')).map("
                                "d => d.data.filter(t => t.name === 'change point').length)")
        assert sorted(markers) == [0, 1, 1]
        browser.close()
    assert errors == [] and dialogs == []


# --- change points beyond the noise: repeats, the machine-speed reference, tentative points ---------

from bench.history import find_change_points  # noqa: E402


def test_runs_of_one_commit_are_repeats_and_never_hold_a_change_point() -> None:
    # Six runs of one commit on a machine that slowed by a quarter halfway: raw values with a step,
    # but no commit boundary for the code to have changed at.
    values = [1000.0, 1010, 990, 760, 750, 770]
    found, _ = find_change_points(values, ["a"] * 6)
    assert found == []


def test_a_step_between_commits_is_found_with_its_interval_and_the_runs_it_rests_on() -> None:
    rng = np.random.default_rng(3)
    values = list(1000 * np.exp(rng.normal(0, 0.02, 9)) * ([1.0] * 6 + [0.9] * 3))
    found, floor = find_change_points(values, ["a"] * 6 + ["b"] * 3)
    assert [c.index for c in found] == [6]
    cp = found[0]
    assert cp.low < -0.1 + 0.03 and cp.high > -0.1 - 0.03 and cp.low < cp.change < cp.high
    assert (cp.runs_before, cp.runs_after, cp.tentative) == (6, 3, False)
    assert abs(cp.change) > floor


def test_a_step_within_the_noise_floor_is_not_a_change_point() -> None:
    values = [1000.0] * 6 + [970.0] * 6
    commits = [f"c{i}" for i in range(12)]
    assert [c.index for c in find_change_points(values, commits)[0]] == [6]
    assert find_change_points(values, commits, floor=0.05)[0] == []


def test_a_change_point_with_few_runs_after_it_is_tentative() -> None:
    values = [1000.0, 1004, 998, 1002, 1001, 999, 850, 852]
    found, _ = find_change_points(values, [f"c{i}" for i in range(8)])
    assert [(c.index, c.tentative) for c in found] == [(6, True)]


def _with_reference(doc: dict[str, Any], relative: dict[str, float], source: str | None = None) -> dict[str, Any]:
    for case in doc["cases"]:
        r = relative[case["id"]]
        case["metrics"]["relative"] = {"median": r, "ci95": [r * 0.98, r * 1.02], "trials": 8, "source": source}
    return doc


def _drifting_history(root: Path, step_in_sgd: float, sources: list[str | None] | None = None) -> Path:
    """Nine runs, one commit each: the machine slows by 20% from the sixth run (raw throughput of
    both cases falls), while throughput relative to the reference holds, except for a planted step
    in the sgd case from the seventh run."""
    base = json.loads((DATA / "base.json").read_text())
    rng = np.random.default_rng(5)
    for i in range(9):
        machine = 1.0 if i < 5 else 0.8
        doc = _scaled(base, machine * float(np.exp(rng.normal(0, 0.03))), f"2026-02-{i + 10:02d}T12:00:00+00:00",
                      f"r{i}")
        noise = np.exp(rng.normal(0, 0.01, 2))
        sgd = 2.0 * (step_in_sgd if i >= 6 else 1.0) * float(noise[0])
        _with_reference(doc, {"sgd": sgd, "adam": 1.0 * float(noise[1])}, (sources or [None] * 9)[i])
        (root / f"run-{i}").mkdir(parents=True)
        (root / f"run-{i}" / "results.json").write_text(json.dumps(doc))
    return root


def test_machine_drift_common_to_the_reference_and_the_cases_is_not_a_change_point(tmp_path: Path) -> None:
    found = load_history(_drifting_history(tmp_path / "h", step_in_sgd=1.0))
    assert all(s.relative for s in found.series)
    assert [c for s in found.series for c in s.change_points] == []
    # Raw throughput did fall by a fifth: the reference is what tells the machine from the code.
    sgd = next(s for s in found.series if s.case_id == "sgd")
    assert sgd.points[8].raw / sgd.points[0].raw < 0.9


def test_a_step_in_one_case_is_found_in_that_case_only_and_listed_in_the_json(tmp_path: Path) -> None:
    root = _drifting_history(tmp_path / "h", step_in_sgd=0.9)
    out, listed = tmp_path / "trend.html", tmp_path / "cp.json"
    proc = bench("history", root, "--out", out, "--json", listed)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(listed.read_text())
    assert [(c["case_id"], c["run_after"]["commit"], c["values"]) for c in data["change_points"]] == [
        ("sgd", "r6" * 5, "relative")]
    cp = data["change_points"][0]
    assert cp["run_before"]["commit"] == "r5" * 5 and cp["ci95"][0] < cp["change"] < cp["ci95"][1] < 0
    assert cp["tentative"] is False and cp["runs_after"] == 3
    assert "relative to the machine-speed reference" in out.read_text()


def test_a_series_whose_runs_measured_the_reference_in_different_places_is_raw(tmp_path: Path) -> None:
    # Runs from before companions (the round's reference process) then with them (the case's own
    # process, at the case's thread count): two different ratios, which must not make a step.
    found = load_history(_drifting_history(tmp_path / "h", step_in_sgd=1.0, sources=[None] * 4 + ["case"] * 5))
    assert found.series and not any(s.relative for s in found.series)
    same = load_history(_drifting_history(tmp_path / "g", step_in_sgd=1.0, sources=["round"] * 4 + [None] * 5))
    assert all(s.relative for s in same.series)


def test_results_without_a_reference_still_load_and_are_labelled_raw(history_dir: Path) -> None:
    found = load_history(history_dir, skip_invalid=True)
    assert found.series and not any(s.relative for s in found.series)
