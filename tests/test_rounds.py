"""The rounds' bookkeeping on synthetic trials: when a case needs no more rounds, how its trials
become its record (estimate, interval, drift), and paired effects over stored records with missing
cells. The scheduler itself runs real processes in test_runner.py and test_interrupt.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.effects import describe, effects
from bench.records import CaseRecord
from bench.rounds import CaseState, case_result, done_reason
from bench.suite import Case, CaseParams, MeasureConfig


def make_case(case_id: str = "c", **measure: Any) -> Case:
    params = CaseParams.model_validate({"model": "mlp", "measure": {"min_time": 0.1, "max_time": 2.0,
                                                                     "trial_time": 0.2, **measure}})
    return Case(case_id, params)


def trial(round_: int, median: float, windows: list[float] | None = None) -> dict[str, Any]:
    windows = windows or [median] * 5
    return {"round": round_, "position": 0, "start_s": float(round_), "repeat": 0, "median": median,
            "trimmed": 0, "drift": 0.0, "stable": True, "windows": windows, "window_s": [0.04] * len(windows),
            "local_window_s": [0.04] * len(windows), "step_time_ms": [1.0] * 8, "steps": 8,
            "step_source": "per_step"}


def state(case: Case, medians: list[float]) -> CaseState:
    s = CaseState(case, Path("/nonexistent.log"))
    s.ready = {"threads": 1, "steps_per_window": 2, "device": "cpu", "warnings": []}
    s.trials = [trial(i, m) for i, m in enumerate(medians)]
    return s


def test_trials_shorten_so_that_max_time_allows_min_rounds() -> None:
    m = MeasureConfig(min_time=0.1, max_time=0.3, min_rounds=6, trial_time=0.5)
    assert m.trial_seconds == pytest.approx(0.05)
    assert m.max_rounds == 6
    assert MeasureConfig(max_time=10, trial_time=0.5).max_rounds == 20
    assert MeasureConfig(max_time=10, trial_time=0.5, rounds=8).max_rounds == 8


def test_a_case_needs_min_rounds_before_its_target_can_stop_it() -> None:
    case = make_case(target_ci=0.5, min_rounds=6)
    assert done_reason(state(case, [100.0] * 5)) is None
    assert done_reason(state(case, [100.0] * 6)) == "target_ci"


def test_a_noisy_case_runs_until_its_budget_of_rounds() -> None:
    case = make_case(target_ci=0.01)  # 2.0 s at 0.2 s a trial: 10 rounds
    noisy = [100.0, 130.0, 80.0, 120.0, 90.0, 140.0, 70.0, 110.0, 95.0]
    assert done_reason(state(case, noisy)) is None
    assert done_reason(state(case, [*noisy, 100.0])) == "max_time"
    assert done_reason(state(make_case(target_ci=0.01, rounds=6), noisy[:6])) == "rounds"


def test_the_record_is_the_median_of_trial_medians_with_an_interval_over_trials() -> None:
    s = state(make_case(target_ci=0.01), [100.0, 104.0, 96.0, 102.0, 98.0, 101.0, 99.0, 103.0])
    s.stop_reason = "max_time"
    result = case_result(s)
    thr = result["metrics"]["throughput"]
    assert thr["median"] == pytest.approx(100.5)
    assert thr["trials"] == 8 and "order-statistic" in thr["interval"]
    low, high = thr["ci95"]
    assert low == 96.0 and high == 104.0  # ranks 1 and 8 of 8 for 95%
    assert thr["ci_target_met"] is False
    assert any("did not reach the target" in w and "8 trials" in w for w in result["warnings"])
    assert result["samples"]["window_trial"] == [i for i in range(8) for _ in range(5)]
    assert CaseRecord.model_validate({**result, "id": "c", "params": s.case.params_json(), "started": "t",
                                      "duration_s": 1.0, "traceback": None}).trials is not None


def test_trials_that_drift_inside_themselves_mark_the_case_unstable_and_say_by_how_much() -> None:
    from bench.trials import trial_from_windows

    steps = [100.0] * 10 + [70.0] * 10
    t = trial_from_windows(6, 0, 6.0, steps)
    s = state(make_case(), [100.0] * 6)
    s.trials.append({**trial(6, t.median, steps), "drift": t.drift, "stable": t.stable})
    # One drifting trial in seven is what chance gives a stationary case now and then: no flag.
    assert case_result(s)["metrics"]["unstable"] is False
    s.trials.append({**trial(7, t.median, steps), "drift": t.drift, "stable": t.stable})
    result = case_result(s)
    assert result["metrics"]["unstable"] is True
    (warning,) = [w for w in result["warnings"] if w.startswith("unstable")]
    assert "2 of 8 trials" in warning and "-30.0%" in warning


def record(case_id: str, optimizer: str, activation: str, medians: dict[int, float] | None,
           status: str = "ok") -> CaseRecord:
    params = {"model": {"name": "mlp"}, "optimizer": {"name": optimizer}, "activation": activation,
              "loss": "cross_entropy", "data": {"name": "synthetic"}, "mode": "cpu", "world_size": 1,
              "batch_size": 8, "lr": 0.01}
    base = {"id": case_id, "params": params, "status": status, "error": None if status == "ok" else "boom",
            "warnings": [], "started": "t", "duration_s": 1.0, "metrics": None, "samples": None}
    if status != "ok" or medians is None:
        return CaseRecord.model_validate(base)
    values = list(medians.values())
    return CaseRecord.model_validate({
        **base,
        "metrics": {"throughput": {"median": sorted(values)[len(values) // 2], "ci95": [None, None]},
                    "step_time_ms": {"p50": 1.0, "p95": 1.0}, "peak_rss_mb": 1.0, "threads": 1, "windows": 1,
                    "steps": 1},
        "samples": {"window_throughput": values, "window_s": [0.1] * len(values), "step_time_ms": [1.0]},
        "trials": [{"round": r, "position": 0, "start_s": float(r), "median": m, "windows": [m]}
                   for r, m in medians.items()]})


def test_effects_pair_cases_within_rounds_and_name_the_cells_that_cannot_be_paired() -> None:
    drift = [1.0, 0.7, 1.3, 0.8, 1.2, 0.9, 1.1, 0.75]  # the machine's speed, shared by each round
    sgd = {r: 1000 * d for r, d in enumerate(drift)}
    cases = [
        record("sgd-relu", "sgd", "relu", sgd),
        record("adam-relu", "adam", "relu", {r: v * 0.9 for r, v in sgd.items()}),
        record("sgd-tanh", "sgd", "tanh", {r: v * 1.05 for r, v in sgd.items()}),
        record("adam-tanh", "adam", "tanh", None, status="failed"),
    ]
    found = {(e.parameter, e.value): e for e in effects(cases)}
    adam = found[("optimizer", "adam")]
    assert adam.baseline == "sgd" and adam.pairs == 1 and adam.rounds == 8
    assert adam.ratio == pytest.approx(0.9) and adam.low == pytest.approx(0.9) and adam.high == pytest.approx(0.9)
    assert any("activation=tanh" in m and "no such case" in m for m in adam.missing)
    tanh = found[("activation", "tanh")]
    assert tanh.ratio == pytest.approx(1.05)
    assert describe(tanh).startswith("activation: tanh vs relu: +5.0% [+5.0, +5.0] (8 rounds)")
    # Unpaired, the drift (+-30%) would swamp the 10% effect: adam's fastest trial beats sgd's slowest.
    assert max(v * 0.9 for v in sgd.values()) > min(sgd.values())


# --- the companion reference: measured in the case's own process ---------------------------------

def test_a_cpu_case_measures_the_reference_in_its_own_process_after_each_trial() -> None:
    import torch

    from bench import reference
    from bench.session import CaseSession

    params = CaseParams.model_validate({"model": {"name": "mlp", "kwargs": {"hidden": 32}}, "batch_size": 4,
                                        "measure": {"warmup_steps": 1, "window_time": 0.01}})
    session = CaseSession(params, torch.device("cpu"), {}, batch=4, samples_per_step=4, wrap=None, threads=1,
                          warnings=[], companion_s=0.05)
    session.prepare()
    answer = session.trial(0.05, collect=False)
    # The reference's own windows, at least its minimum, beside the case's: the coordinator takes
    # their median as this trial's reference, and the case's windows are not mixed with them.
    assert len(answer["reference_windows"]) >= reference.companion_params().measure.min_windows
    assert all(w > 0 for w in answer["reference_windows"])
    assert len(session.local_window_s) == len(answer["window_s"])
    alone = CaseSession(params, torch.device("cpu"), {}, batch=4, samples_per_step=4, wrap=None, threads=1,
                        warnings=[])
    alone.prepare()
    assert "reference_windows" not in alone.trial(0.05, collect=False)


def test_only_cpu_cases_hold_a_companion_sized_to_a_share_of_their_trial() -> None:
    from bench import reference

    cpu = make_case(trial_time=2.0, max_time=60.0)
    assert reference.companion_seconds(cpu) == pytest.approx(reference.COMPANION_SHARE * 2.0)
    short = make_case(trial_time=0.1)
    assert reference.companion_seconds(short) == reference.COMPANION_MIN_SECONDS
    gpu = Case("g", CaseParams.model_validate({"model": "mlp", "mode": "cuda"}))
    assert reference.companion_seconds(gpu) is None


def test_a_trial_keeps_its_companion_reference_and_the_record_says_where_it_came_from() -> None:
    from bench.rounds import trial_record

    answer = {"start": 10.0, "window_throughput": [100.0] * 5, "window_s": [0.04] * 5, "step_time_ms": [1.0],
              "steps": 5, "step_source": "per_step", "reference_windows": [400.0, 410.0, 390.0]}
    kept = trial_record(answer, 0, 0, 0.0, 0)
    assert (kept["reference"], kept["reference_source"]) == (400.0, "case")
    s = state(make_case(), [100.0] * 6)
    for t in s.trials:
        t.update(reference=400.0, reference_source="case")
    s.trials[0]["reference_source"] = "round"
    relative = case_result(s)["metrics"]["relative"]
    assert relative["median"] == pytest.approx(0.25) and relative["source"] == "mixed"
