"""The statistics, rules and verdicts of `bench compare` (bench.compare, bench.rules), on runs built
in memory with known samples. The CLI on committed result files is in test_compare_cli.py; real
runs (A/A, planted slowdown) in test_compare_real_runs.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from bench.compare import (
    Comparison,
    adjust,
    bootstrap_medians,
    compare_runs,
    judge,
    mann_whitney,
    ratio_ci,
    to_json,
    to_markdown,
)
from bench.environment import differences
from bench.errors import UsageError
from bench.records import Environment, ResultsDoc
from bench.results import Run
from bench.rules import DEFAULT_RULES, Rule, resolve_rules

ENV = {"python": "3.11.7", "torch": "2.14.1", "cpu_model": "Xeon", "cores_logical": 2, "cores_available": 2,
       "torch_threads": 2, "hostname": "a", "time": "2026-01-01T00:00:00+00:00", "gpus": [], "cuda": None}


PARAMS = {"model": {"name": "mlp"}, "optimizer": {"name": "sgd"}, "activation": "relu", "loss": "cross_entropy",
          "data": {"name": "synthetic"}, "mode": "cpu", "world_size": 1, "batch_size": 16, "lr": 0.01}
RECORD = {"params": PARAMS, "warnings": [], "started": "2026-01-01T00:00:00+00:00", "duration_s": 1.0}


def case(case_id: str, throughput: list[float] | None, rss: float = 500.0, status: str = "ok",
         steps: list[float] | None = None) -> dict[str, Any]:
    if status != "ok" or throughput is None:
        return {**RECORD, "id": case_id, "status": status, "error": "RuntimeError: boom", "metrics": None,
                "samples": None}
    steps = steps if steps is not None else [1000 * 16 / t for t in throughput]
    windows = len(throughput)
    return {**RECORD, "id": case_id, "status": "ok", "error": None,
            "metrics": {"throughput": {"median": float(np.median(throughput)), "ci95": [None, None]},
                        "step_time_ms": {"p50": float(np.median(steps)), "p95": float(np.percentile(steps, 95))},
                        "peak_rss_mb": rss, "threads": 2, "windows": max(windows, 1), "steps": max(windows, 1)},
            "samples": {"window_throughput": list(throughput), "step_time_ms": list(steps),
                        "window_s": [16 / t for t in throughput]},
            # One window per trial: the trials are the throughputs given.
            "trials": [{"round": i, "position": 0, "start_s": float(i), "median": t, "windows": [t]}
                       for i, t in enumerate(throughput)]}


def run(label: str, cases: list[dict[str, Any]], **env: Any) -> Run:
    doc = ResultsDoc.model_validate({
        "schema_version": 2, "cases": cases, "environment": {**ENV, **env},
        "run": {"started": "2026-01-01T00:00:00+00:00", "finished": None, "status": "complete", "argv": []},
        "suite": {"name": "t", "path": "t.yaml", "source": {}}})
    return Run(path=Path(f"/runs/{label}/results.json"), label=label, doc=doc)


def noisy(median: float, n: int = 20, cv: float = 0.02, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(median * np.exp(rng.normal(0, cv, n)))


# --- rules -------------------------------------------------------------------------------------

def test_rule_parses_a_signed_percentage_into_a_metric_and_a_fraction() -> None:
    assert Rule.parse("throughput:-5%") == Rule("throughput", -0.05)
    assert Rule.parse(" peak_rss_mb : +10.5% ") == Rule("peak_rss_mb", 0.105)
    assert str(Rule.parse("throughput:-5%")) == "throughput:-5%"


@pytest.mark.parametrize(("text", "expected"), [
    ("throughput:5%", "write METRIC:-N% or METRIC:+N%"),
    ("throughput", "write METRIC:-N% or METRIC:+N%"),
    ("throughput:-0%", "must be above 0%"),
    ("throughput:-100%", "below 100%"),
    ("flops:-5%", "unknown metric 'flops' (choose from: cuda_peak_allocated_mb, cuda_peak_reserved_mb, peak_rss_mb,"),
])
def test_rule_rejects_malformed_text_with_a_message_naming_the_option(text: str, expected: str) -> None:
    with pytest.raises(UsageError) as err:
        Rule.parse(text)
    assert str(err.value).startswith(f"--fail-on {text!r}: ")
    assert expected in str(err.value)


def test_rule_direction_decides_what_is_worse_and_what_is_better() -> None:
    drop, rise = Rule("throughput", -0.05), Rule("peak_rss_mb", 0.10)
    assert drop.is_worse(-0.05) and drop.is_worse(-0.2) and not drop.is_worse(-0.049)
    assert drop.is_better(0.05) and not drop.is_better(0.03)
    assert rise.is_worse(0.10) and not rise.is_worse(-0.5) and rise.is_better(-0.10)


def test_given_rules_replace_the_default_for_their_metric_and_keep_it_for_others() -> None:
    assert resolve_rules(None) == DEFAULT_RULES == (Rule("throughput", -0.05),)
    assert resolve_rules(["throughput:-3%"]) == (Rule("throughput", -0.03),)
    assert resolve_rules(["peak_rss_mb:+10%"]) == (Rule("throughput", -0.05), Rule("peak_rss_mb", 0.10))
    with pytest.raises(UsageError, match="two rules for throughput"):
        resolve_rules(["throughput:-3%", "throughput:-4%"])


def test_failure_message_is_a_sentence_naming_case_metric_change_and_interval() -> None:
    text = Rule("throughput", -0.05).failure_message("mlp-sgd", 1000.0, 900.0, -0.1, (-0.12, -0.08), 0.0004,
                                                      "Benjamini-Hochberg")
    assert text == ("case 'mlp-sgd': throughput fell by 10.0% (95% CI -12.0% to -8.0%, p = 0.0004 after "
                    "Benjamini-Hochberg), from 1,000 to 900 samples/s; the rule throughput:-5% fails when "
                    "throughput drops by 5.0% or more.")


# --- statistics --------------------------------------------------------------------------------

def test_bootstrap_medians_equal_the_medians_of_resampled_values() -> None:
    """The order-statistic shortcut gives exactly what resampling the values would."""
    values = np.sort(np.random.default_rng(3).lognormal(0, 0.3, 17))
    fast = bootstrap_medians(values, role=0, resamples=500, seed=7)
    rng = np.random.default_rng([7, 17, 0])
    idx = rng.integers(0, 17, size=(500, 17), dtype=np.int32)
    assert np.allclose(fast, np.median(values[idx], axis=1))
    even = np.sort(np.random.default_rng(4).lognormal(0, 0.3, 12))
    rng = np.random.default_rng([7, 12, 1])
    idx = rng.integers(0, 12, size=(500, 12), dtype=np.int32)
    assert np.allclose(bootstrap_medians(even, role=1, resamples=500, seed=7), np.median(even[idx], axis=1))


def test_ratio_interval_agrees_with_scipy_bootstrap_within_monte_carlo_error() -> None:
    base, new = np.array(noisy(1000, 30, seed=1)), np.array(noisy(900, 25, seed=2))
    lo, hi = ratio_ci(base, new, resamples=4000)
    ref = stats.bootstrap((base, new), lambda a, b, axis=-1: np.median(b, axis=axis) / np.median(a, axis=axis),
                          method="percentile", n_resamples=4000, random_state=0, vectorized=True)
    assert lo == pytest.approx(ref.confidence_interval.low - 1, abs=0.006)
    assert hi == pytest.approx(ref.confidence_interval.high - 1, abs=0.006)
    assert lo < -0.1 + 0.02 and hi > -0.1 - 0.02


def test_batched_mann_whitney_equals_scipy_with_and_without_ties_and_for_small_samples() -> None:
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(300):
        n1, n2 = rng.integers(2, 40, 2)
        a, b = rng.normal(0, 1, n1), rng.normal(0.3, 1, n2)
        if i % 3 == 0:  # ties
            a, b = np.round(a, 1), np.round(b, 1)
        pairs.append((a, b))
    expected = [stats.mannwhitneyu(a, b, alternative="two-sided").pvalue for a, b in pairs]
    assert mann_whitney(pairs) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_corrections_match_their_textbook_definitions() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted p times (m - rank), made monotone: 0.005*4, 0.01*3, 0.03*2, 0.04*1, then max-accumulated.
    assert adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Benjamini-Hochberg: p * m / rank, made monotone from the top.
    assert adjust(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust(p, "none") == p


@pytest.mark.parametrize(("change", "ci", "p", "verdict"), [
    (-0.10, (-0.12, -0.08), 0.001, "regression"),
    (-0.10, (-0.12, -0.08), 0.2, "inconclusive"),      # the test and the interval disagree
    (0.10, (0.08, 0.12), 0.001, "improvement"),
    (-0.02, (-0.03, -0.01), 0.001, "unchanged"),        # significant but smaller than the threshold
    (-0.03, (-0.07, 0.01), 0.2, "inconclusive"),        # could be a 5% drop
    (0.03, (-0.01, 0.06), 0.2, "inconclusive"),         # could be a 5% gain
    (0.0, (-0.02, 0.02), 0.9, "unchanged"),
    (-0.06, (-0.07, 0.01), 0.001, "inconclusive"),      # CI includes zero: not a regression
])
def test_verdicts_follow_significance_interval_and_threshold(change: float, ci: tuple[float, float], p: float,
                                                             verdict: str) -> None:
    assert judge(Rule("throughput", -0.05), change, ci, p) == verdict


def test_single_value_metrics_are_judged_by_the_ratio_alone() -> None:
    rule = Rule("peak_rss_mb", 0.10)
    assert judge(rule, 0.12, None, None) == "regression"
    assert judge(rule, 0.05, None, None) == "unchanged"
    assert judge(rule, -0.2, None, None) == "improvement"


# --- compare_runs ------------------------------------------------------------------------------

def test_compare_flags_a_ten_percent_slowdown_as_regression_naming_the_case() -> None:
    base = run("base", [case("mlp", noisy(1000, seed=1)), case("cnn", noisy(500, seed=2))])
    new = run("new", [case("mlp", noisy(900, seed=3)), case("cnn", noisy(500, seed=4))])
    result = compare_runs(base, new)
    by_case = {r.case_id: r for r in result.rows}
    assert [r.case_id for r in result.regressions] == ["mlp"]
    row = by_case["mlp"]
    assert row.change == pytest.approx(np.median(noisy(900, seed=3)) / np.median(noisy(1000, seed=1)) - 1)
    assert row.ci95 is not None and row.ci95[0] < row.change < row.ci95[1] < 0
    assert row.p_value is not None and row.p_value < 0.001
    assert row.message.startswith("Regression: case 'mlp': throughput fell by ")
    assert by_case["cnn"].verdict == "unchanged"


def test_compare_gives_the_same_verdicts_and_intervals_every_time() -> None:
    base = run("base", [case(f"c{i}", noisy(1000, seed=i)) for i in range(5)])
    new = run("new", [case(f"c{i}", noisy(960, seed=10 + i)) for i in range(5)])
    assert compare_runs(base, new).rows == compare_runs(base, new).rows


def test_compare_calls_too_few_samples_and_failed_cases_inconclusive() -> None:
    base = run("base", [case("few", [1000.0, 1010.0, 990.0]), case("broken", noisy(1000)), case("ok", noisy(1000))])
    new = run("new", [case("few", [800.0, 810.0, 790.0]), case("broken", None, status="failed"),
                      case("ok", noisy(1000, seed=5))])
    rows = {r.case_id: r for r in compare_runs(base, new).rows}
    assert rows["few"].verdict == "inconclusive"
    assert "too few throughput trials to test (3 in base, 3 in new; need 5)" in rows["few"].message
    assert rows["broken"].verdict == "inconclusive"
    assert rows["broken"].message == "Inconclusive: case 'broken' is failed in new: RuntimeError: boom"
    assert rows["ok"].verdict == "unchanged"


def test_compare_lists_added_and_removed_cases() -> None:
    base = run("base", [case("a", noisy(1000)), case("gone", noisy(1000))])
    new = run("new", [case("a", noisy(1000, seed=1)), case("fresh", noisy(1000))])
    result = compare_runs(base, new)
    assert (result.added, result.removed) == (["fresh"], ["gone"])
    assert [r.case_id for r in result.rows] == ["a"]


def test_compare_refuses_runs_with_no_case_in_common() -> None:
    with pytest.raises(UsageError, match=r"cases: no case id in common with /runs/base/results.json "
                                         r"\(base has 1 case\(s\): a; new has 1 case\(s\): b\)"):
        compare_runs(run("base", [case("a", noisy(1000))]), run("new", [case("b", noisy(1000))]))


def test_compare_applies_every_rule_including_single_value_metrics() -> None:
    base = run("base", [case("a", noisy(1000), rss=500)])
    new = run("new", [case("a", noisy(1000, seed=9), rss=600)])
    rows = {r.metric: r for r in compare_runs(base, new, ["peak_rss_mb:+10%", "step_time_ms:+5%"]).rows}
    assert set(rows) == {"throughput", "peak_rss_mb", "step_time_ms"}
    assert rows["peak_rss_mb"].verdict == "regression"
    assert rows["peak_rss_mb"].change == pytest.approx(0.2)
    assert rows["peak_rss_mb"].ci95 is None and rows["peak_rss_mb"].p_value is None
    assert rows["step_time_ms"].verdict == "unchanged"


def test_fifty_unchanged_cases_raise_no_alarm_after_correction() -> None:
    """A/A on a noisy suite: 50 cases of 12 windows with 6% noise, 20 times over. Without a
    correction some cases come out significant; with Benjamini-Hochberg none is flagged."""
    significant_uncorrected = 0
    alarms = 0
    for trial in range(20):
        base = run("base", [case(f"c{i}", noisy(1000, 12, 0.06, seed=trial * 1000 + i)) for i in range(50)])
        new = run("new", [case(f"c{i}", noisy(1000, 12, 0.06, seed=trial * 1000 + 500 + i)) for i in range(50)])
        raw = compare_runs(base, new, correction="none")
        significant_uncorrected += sum(1 for r in raw.rows if r.p_value is not None and r.p_value < 0.05)
        alarms += len(compare_runs(base, new).regressions)
    assert significant_uncorrected > 20  # about 5% of 1,000 tests
    assert alarms == 0


def test_environment_differences_name_each_timing_relevant_fact_but_not_the_hostname() -> None:
    def env(**changes: Any) -> Environment:
        return Environment.model_validate({**ENV, **changes})

    other = env(torch="2.15.0", hostname="b", gpus=[{"name": "NVIDIA H100", "driver": "550.1"}])
    assert differences(env(), other) == ["GPUs: - → NVIDIA H100", "GPU driver: - → 550.1", "torch: 2.14.1 → 2.15.0"]
    assert differences(env(), env(hostname="b", time="later")) == []


# --- outputs -----------------------------------------------------------------------------------

def _mixed() -> Comparison:
    base = run("base", [case("fast|<b>x</b>", noisy(1000, seed=1)), case("same", noisy(1000, seed=2)),
                        case("better", noisy(1000, seed=3))])
    new = run("new", [case("fast|<b>x</b>", noisy(850, seed=4)), case("same", noisy(1000, seed=5)),
                      case("better", noisy(1200, seed=6))], torch="2.15.0")
    return compare_runs(base, new)


def test_markdown_puts_regressions_first_and_folds_unchanged_rows() -> None:
    text = to_markdown(_mixed())
    lines = text.splitlines()
    assert lines[0] == "## bench compare (unpaired): `base` → `new`"
    assert lines[2] == "🔴 **1 regression(s)** (1 improvement, 1 unchanged)"
    assert "Rules: `throughput:-5%`" in text
    assert "> - torch: 2.14.1 → 2.15.0" in text
    assert "| torch ⚠️ | 2.14.1 | 2.15.0 |" in text
    table = [line for line in lines if line.startswith("| fast") or line.startswith("| better")]
    assert table[0].startswith("| fast\\|&lt;b&gt;x&lt;/b&gt; | throughput |")  # escaped, first
    assert table[1].startswith("| better | throughput |")
    folded = text.index("<details><summary>1 unchanged</summary>")
    assert text.index("| same | throughput |") > folded
    assert "<b>" not in text


def test_json_output_holds_every_verdict_and_the_settings() -> None:
    doc = json.loads(json.dumps(to_json(_mixed())))
    assert doc["rules"] == ["throughput:-5%"] and doc["correction"] == "bh" and doc["alpha"] == 0.05
    assert doc["counts"] == {"regression": 1, "improvement": 1, "inconclusive": 0, "unchanged": 1}
    assert doc["regression"] is True
    assert doc["env_differences"] == ["torch: 2.14.1 → 2.15.0"]
    verdicts = {r["case_id"]: r["verdict"] for r in doc["rows"]}
    assert verdicts == {"fast|<b>x</b>": "regression", "same": "unchanged", "better": "improvement"}
    assert len(doc["rows"][0]["ci95"]) == 2


# --- the noise floor of unpaired runs ---------------------------------------------------------------

def _calibration(floor: float) -> Any:
    from bench.calibration import CalibrationCase, CalibrationDoc

    return CalibrationDoc(created="2026-12-01T00:00:00+00:00", suite="t", environment=Environment.model_validate(ENV),
                          false_alarms=0, noise_floor=floor,
                          cases=[CalibrationCase(id="a", verdict="unchanged", pairs=100, launches=10, launch_sd=0.05,
                                                 drift=floor)])


def test_a_change_within_the_runs_own_spread_is_inconclusive_not_a_regression() -> None:
    # Trials that spread by about 15% within each run: a 10% lower median between two runs made at
    # different times is within what the machine's drift alone does.
    base = run("base", [case("a", noisy(1000, n=40, cv=0.06, seed=1))])
    new = run("new", [case("a", noisy(900, n=40, cv=0.06, seed=2))])
    row = compare_runs(base, new).rows[0]
    assert row.verdict == "inconclusive"
    assert row.noise_floor is not None and row.noise_floor > 0.10
    assert "noise floor" in row.message and "bench ab" in row.message


def test_a_calibrated_noise_floor_replaces_the_runs_own_spread() -> None:
    base = run("base", [case("a", noisy(1000, n=40, cv=0.06, seed=1))])
    new = run("new", [case("a", noisy(900, n=40, cv=0.06, seed=2))])
    narrow = compare_runs(base, new, calibration=_calibration(0.02)).rows[0]
    assert narrow.verdict == "regression" and narrow.noise_floor == 0.02
    wide = compare_runs(base, new, calibration=_calibration(0.2)).rows[0]
    assert wide.verdict == "inconclusive"
    assert "bench aa" in wide.message


def test_markdown_labels_the_comparison_unpaired_and_states_the_smallest_change_it_can_detect() -> None:
    base = run("base", [case("a", noisy(1000, n=40, cv=0.06, seed=1))])
    new = run("new", [case("a", noisy(900, n=40, cv=0.06, seed=2))])
    text = to_markdown(compare_runs(base, new))
    assert "(unpaired)" in text.splitlines()[0]
    assert "smallest change these runs can detect" in text


def _referenced(record: dict[str, Any], references: list[float], source: str) -> dict[str, Any]:
    for trial, reference in zip(record["trials"], references, strict=True):
        trial.update(reference=reference, reference_source=source)
    return record


def test_relative_throughput_is_compared_only_between_references_measured_in_the_same_place() -> None:
    # The machine is a fifth slower in the new run: raw throughput falls, the reference with it.
    base = run("base", [_referenced(case("mlp", noisy(1000, seed=1)), noisy(2000, seed=5), "case")])
    slower = _referenced(case("mlp", noisy(800, seed=3)), noisy(1600, seed=6), "case")
    row = compare_runs(base, run("new", [slower])).rows[0]
    assert row.relative and row.raw_change is not None and row.raw_change < -0.15
    assert abs(row.change) < 0.05 and row.verdict != "regression"
    # The same trials, but the new run's references came from the round's own process: a
    # different ratio, so the comparison falls back to raw throughput and says why.
    elsewhere = _referenced(case("mlp", noisy(800, seed=3)), noisy(1600, seed=6), "round")
    row = compare_runs(base, run("new", [elsewhere])).rows[0]
    assert not row.relative and row.change < -0.15
    assert "Compared raw: the runs measured the machine-speed reference in different places" in row.message
