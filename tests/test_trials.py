"""Statistics of randomized rounds, checked on synthetic drifting machines with seeded noise: no
clock is read and no real time is measured."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy.special import ndtr

from bench.measure import median_ci
from bench.trials import (
    Effect,
    EffectCase,
    Estimate,
    Trial,
    _signed_rank_k,
    detect_drift,
    effects_by_parameter,
    estimate,
    min_trials,
    paired_effect,
    ratio_to_pct,
    round_orders,
    rounds_needed,
    target_met,
    trial_from_windows,
)

RUNS = 2000
# A machine whose log speed drifts as an AR(1) process over trial slots: 8% spread, and a
# correlation of 0.5 between one round and the next (the 3 s neighbours of NOISE.md).
SPREAD, TRIAL_NOISE, CASES = 0.08, 0.03, 4


def ar1(rng: np.random.Generator, steps: int, phi: float, runs: int = RUNS) -> np.ndarray:
    s = np.empty((runs, steps))
    s[:, 0] = rng.normal(0, SPREAD, runs)
    for t in range(1, steps):
        s[:, t] = phi * s[:, t - 1] + rng.normal(0, SPREAD * math.sqrt(1 - phi**2), runs)
    return s


def drifting_runs(rounds: int, seed: int, phi: float = 0.5 ** (1 / CASES)) -> tuple[np.ndarray, np.ndarray]:
    """(machine log speed per slot: runs x rounds x slots, log speed each case met: runs x rounds x
    cases), with the cases placed by ``round_orders`` from each run's own seed."""
    rng = np.random.default_rng(seed)
    speed = ar1(rng, rounds * CASES, phi).reshape(RUNS, rounds, CASES)
    ids = [str(c) for c in range(CASES)]
    pos = np.array([[[o.index(c) for c in ids] for o in round_orders(ids, rounds, seed=run)]
                    for run in range(RUNS)])
    return speed, np.take_along_axis(speed, pos, axis=2)


def run_median(speed: np.ndarray, noise: float) -> np.ndarray:
    """Per run, the median of the case's throughput over the run: of log speed plus normal noise,
    mixed over all slots (bisection on the mixture's distribution function)."""
    s = speed.reshape(len(speed), -1)
    lo, hi = s.min(1) - 6 * noise, s.max(1) + 6 * noise
    for _ in range(60):
        mid = (lo + hi) / 2
        below = ndtr((mid[:, None] - s) / noise).mean(1) < 0.5
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return np.exp((lo + hi) / 2)


def covers(est: Estimate | Effect | None, value: float) -> bool:
    assert est is not None and est.low is not None and est.high is not None
    return est.low <= value <= est.high


# --- the schedule -------------------------------------------------------------------------------

def test_round_orders_replay_a_recorded_seed_exactly() -> None:
    # Pinned: a results file records the seed, and a later version must rebuild the same orders.
    assert round_orders(["a", "b", "c"], 7, seed=2024) == [
        ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"], ["a", "c", "b"], ["b", "a", "c"],
        ["c", "b", "a"], ["b", "c", "a"]]
    assert round_orders(["w", "x", "y", "z"], 5, seed=7) == [
        ["x", "y", "w", "z"], ["y", "z", "x", "w"], ["w", "x", "z", "y"], ["z", "w", "y", "x"],
        ["x", "w", "y", "z"]]
    assert round_orders(["a", "b", "c"], 3, seed=2024, balanced=False) == [
        ["a", "c", "b"], ["c", "b", "a"], ["a", "c", "b"]]
    assert round_orders(list("abcde"), 9, seed=1) != round_orders(list("abcde"), 9, seed=2)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_balanced_orders_put_every_case_in_every_position_and_after_every_other_equally(k: int) -> None:
    ids = [f"case{i}" for i in range(k)]
    block = k if k % 2 == 0 else 2 * k
    orders = round_orders(ids, 3 * block, seed=k)
    assert all(sorted(o) == ids for o in orders)
    for start in range(0, 3 * block, k):  # every k rounds: each case once in each position
        assert all(sorted(o[p] for o in orders[start:start + k]) == ids for p in range(k))
    neighbours = Counter((o[i], o[i + 1]) for o in orders for i in range(k - 1))
    assert len(neighbours) == k * (k - 1) and len(set(neighbours.values())) == 1
    partial = round_orders(ids, k - 1, seed=k)  # fewer rounds than cases: no position repeats
    assert all(len({o[p] for o in partial}) == k - 1 for p in range(k))


def test_round_orders_refuse_duplicate_case_ids() -> None:
    with pytest.raises(ValueError, match="distinct"):
        round_orders(["a", "a"], 2, seed=0)


# --- one case's throughput ----------------------------------------------------------------------

def test_estimate_uses_order_statistics_from_six_trials_a_t_interval_below_and_none_for_one() -> None:
    assert min_trials(0.95) == 6 and min_trials(0.99) == 8
    six = estimate([100, 104, 98, 101, 99, 103])
    assert (six.point, six.low, six.high, six.n) == (100.5, 98, 104, 6)
    assert "order-statistic" in six.method
    assert six.rel_half_width == pytest.approx(3 / 100.5)
    three = estimate([100, 104, 98])
    assert "t-interval" in three.method and three.low is not None and three.high is not None
    assert three.low < 98 and three.high > 104
    assert not target_met(three, 1.0)  # a parametric interval from 3 trials never meets a target
    one = estimate([100])
    assert (one.point, one.low, one.high, one.rel_half_width) == (100, None, None, math.inf)
    assert math.isnan(estimate([]).point) and estimate([]).n == 0
    with pytest.raises(ValueError, match="positive"):
        estimate([100, 0])


def test_rounds_needed_is_zero_once_met_and_grows_as_the_square_of_the_precision() -> None:
    values = list(np.exp(np.random.default_rng(3).normal(0, 0.1, 10)) * 100)
    width = estimate(values).rel_half_width
    assert rounds_needed(values, width) == 0 and target_met(estimate(values), width)
    assert rounds_needed(values[:1], 0.05) is None
    # Many rounds: the asymptotic width of a median, 1.96 * 1.2533 * sd / sqrt(n), sd of the logs.
    sd = float(np.std(np.log(values), ddof=1))
    for target in (0.01, 0.005):
        more = rounds_needed(values, target)
        assert more is not None
        assert more + 10 == pytest.approx((1.96 * 1.2533 * sd / target) ** 2, rel=0.06)
    three = rounds_needed(values[:3], 0.05)
    assert three is not None and three >= 3  # at least the 6 trials of a distribution-free interval


def test_rounds_needed_projects_about_the_width_that_more_rounds_then_give() -> None:
    rng = np.random.default_rng(4)
    reached = []
    for _ in range(200):
        first = np.exp(rng.normal(0, 0.1, 8))
        more = rounds_needed(list(first), 0.03)
        assert more is not None and more > 0
        reached.append(estimate(list(first) + list(np.exp(rng.normal(0, 0.1, more)))).rel_half_width)
    assert 0.024 <= float(np.median(reached)) <= 0.036


@pytest.mark.parametrize("rounds", [8, 15, 30])
def test_trial_interval_covers_the_median_over_the_run_despite_round_to_round_drift(rounds: int) -> None:
    speed, met = drifting_runs(rounds, seed=rounds)
    medians = np.exp(met[:, :, 0] + np.random.default_rng(rounds).normal(0, TRIAL_NOISE, (RUNS, rounds)))
    truth = run_median(speed, TRIAL_NOISE)
    coverage = np.mean([covers(estimate(list(m)), t) for m, t in zip(medians, truth, strict=True)])
    assert coverage >= 0.93, coverage


@pytest.mark.parametrize("rounds", [8, 15, 30])
def test_trial_interval_covers_the_machines_centre_when_rounds_barely_correlate(rounds: int) -> None:
    # Correlation 0.5 between neighbouring trials, so about 0.06 between one round and the next.
    _, met = drifting_runs(rounds, seed=rounds + 50, phi=0.5)
    medians = np.exp(met[:, :, 0] + np.random.default_rng(rounds).normal(0, TRIAL_NOISE, (RUNS, rounds)))
    coverage = np.mean([covers(estimate(list(m)), 1.0) for m in medians])
    assert coverage >= 0.90, coverage


def test_drift_that_fools_the_window_interval_of_one_stretch_widens_the_trial_interval() -> None:
    rounds, windows, window_noise = 12, 10, 0.05
    speed, met = drifting_runs(rounds, seed=7)
    noise = np.random.default_rng(7).normal(0, window_noise, (RUNS, rounds, windows))
    truth = run_median(speed, window_noise)
    # The old design: the case runs in one stretch (the first quarter of the same run), and its
    # interval comes from all its windows as if they were independent.
    stretch = np.exp(speed.reshape(RUNS, -1)[:, :rounds, None] + noise)
    old = [median_ci(list(w.ravel())) for w in stretch]
    old_coverage = np.mean([lo <= t <= hi for (lo, hi), t in zip(old, truth, strict=True)])
    # The new design: the same windows, but one trial per randomized round.
    trials = np.exp(met[:, :, :1] + noise)
    new = [estimate(list(np.median(w, axis=1))) for w in trials]
    new_coverage = np.mean([covers(e, t) for e, t in zip(new, truth, strict=True)])
    assert old_coverage < 0.5 and new_coverage >= 0.93, (old_coverage, new_coverage)
    # On the randomized trials too, windows as the unit would give a far narrower interval.
    pooled = np.median([(hi - lo) / 2 for lo, hi in (median_ci(list(w.ravel())) for w in trials)])
    assert np.median([e.rel_half_width * e.point for e in new]) > 2 * pooled


# --- inside one trial ---------------------------------------------------------------------------

def noisy(rng: np.random.Generator, n: int, cv: float = 0.10) -> np.ndarray:
    return 1000 * np.exp(rng.normal(0, cv, n))


@pytest.mark.parametrize("n", [10, 20, 40])
def test_stationary_noisy_trials_are_rarely_flagged(n: int) -> None:
    rng = np.random.default_rng(n)
    found = [detect_drift(list(noisy(rng, n))) for _ in range(500)]
    assert np.mean([not f.stable for f in found]) <= 0.05
    assert np.mean([f.warmup > 0 for f in found]) <= 0.05


def test_a_twenty_percent_step_is_flagged_and_located() -> None:
    rng = np.random.default_rng(20)
    found = []
    for _ in range(500):
        y = noisy(rng, 40)
        y[20:] *= 1.2
        found.append(detect_drift(list(y)))
    assert np.mean([not f.stable for f in found]) >= 0.95
    assert np.mean([f.change for f in found]) == pytest.approx(0.2, abs=0.04)
    clear = np.r_[np.full(10, 100.0), np.full(10, 80.0)] * np.exp(rng.normal(0, 0.01, 20))
    result = detect_drift(list(clear))
    assert result.breakpoints == [10] and result.change == pytest.approx(-0.2, abs=0.02)


@pytest.mark.parametrize("slow", [2, 3])
def test_a_slow_warm_up_is_trimmed_and_leaves_the_trial_stable(slow: int) -> None:
    rng = np.random.default_rng(slow)
    trials = []
    for _ in range(100):
        y = noisy(rng, 20)
        y[:slow] /= 2
        trial = trial_from_windows(3, 1, 12.5, list(y))
        assert trial.trimmed >= slow and trial.median == np.median(y[trial.trimmed:])
        trials.append(trial)
    # Now and then the first steady window is itself low enough to go too: harmless to the median.
    assert np.mean([t.trimmed == slow for t in trials]) >= 0.95
    assert np.mean([t.stable for t in trials]) >= 0.95
    gradual = [500, 800, 950, 1000, 1010, 990, 1000, 1005, 995, 1000]
    assert detect_drift(gradual).warmup == 3  # 950 is still 5% short, against 1% noise


def test_short_trials_have_no_segments_and_the_trial_keeps_its_windows() -> None:
    result = detect_drift([100, 80, 100, 80, 100])
    assert (result.warmup, result.breakpoints, result.change, result.stable) == (0, [], 0.0, True)
    trial = trial_from_windows(0, 2, 1.0, [100, 102, 98])
    assert trial == Trial(0, 2, 1.0, (100.0, 102.0, 98.0)) and trial.median == 100


# --- paired effects -----------------------------------------------------------------------------

def test_pairing_within_rounds_finds_an_effect_that_the_drift_hides_from_unpaired_intervals() -> None:
    rng = np.random.default_rng(11)
    rounds = 12
    machine = 1000 * np.exp(rng.normal(0, 0.15, rounds))  # +-30% from round to round
    base = dict(enumerate(machine * np.exp(rng.normal(0, 0.02, rounds))))
    other = dict(enumerate(1.10 * machine * np.exp(rng.normal(0, 0.02, rounds))))
    effect = paired_effect(base, other)
    assert effect is not None and effect.n_pairs == rounds
    assert effect.low <= 1.10 <= effect.high and effect.significant
    a, b = estimate(list(base.values())), estimate(list(other.values()))
    assert a.low is not None and a.high is not None and b.low is not None and b.high is not None
    assert b.low < a.high and a.low < b.high  # each case alone: the intervals overlap


def test_signed_rank_ranks_match_the_enumerated_null_distribution() -> None:
    for n in range(1, 13):
        signs = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        cdf = np.cumsum(np.bincount(signs @ np.arange(1, n + 1), minlength=n * (n + 1) // 2 + 1)) / 2**n
        assert _signed_rank_k(n, 0.95) == np.count_nonzero(cdf <= 0.025), n
    # Beyond 300 rounds the normal approximation takes over, continuing the exact ranks.
    step = _signed_rank_k(301, 0.95) - _signed_rank_k(300, 0.95)
    assert 0.4 * 301 < step < 0.6 * 301


@pytest.mark.parametrize("rounds", [8, 15, 30])
def test_paired_interval_covers_the_true_effect_under_drift(rounds: int) -> None:
    _, met = drifting_runs(rounds, seed=rounds + 200)
    rng = np.random.default_rng(rounds + 200)
    base = np.exp(met[:, :, 0] + rng.normal(0, TRIAL_NOISE, (RUNS, rounds)))
    other = 1.1 * np.exp(met[:, :, 1] + rng.normal(0, TRIAL_NOISE, (RUNS, rounds)))
    coverage = np.mean([covers(paired_effect(dict(enumerate(b)), dict(enumerate(o))), 1.1)
                        for b, o in zip(base, other, strict=True)])
    assert coverage >= 0.93, coverage


def test_paired_effect_uses_only_rounds_both_ran_in_and_describes_itself() -> None:
    base = {0: 100.0, 1: 110.0, 2: 90.0, 3: 100.0, 4: 105.0, 5: 95.0, 7: 1.0}
    other = {r: v * 0.97 for r, v in base.items() if r != 7} | {6: 1.0}
    effect = paired_effect(base, other)
    assert effect is not None and effect.n_pairs == 6
    assert effect.point == pytest.approx(0.97) and effect.describe() == "-3.0% [-3.0, -3.0]"
    assert "Wilcoxon" in effect.method
    assert paired_effect({0: 1.0, 1: 2.0}, {1: 2.0, 2: 1.0}) is None
    few = paired_effect({0: 100.0, 1: 120.0, 2: 90.0}, {0: 103.0, 1: 125.0, 2: 92.0})
    assert few is not None and "t-interval" in few.method and few.low < few.point < few.high
    assert ratio_to_pct(0.969) == pytest.approx(-3.1)


# --- effects of swept parameters ----------------------------------------------------------------

AXES = {"optimizer": ["sgd", "adam"], "activation": ["relu", "tanh", "gelu"]}
TRUE = {"tanh": 1.10, "gelu": 0.95, "relu": 1.0, "sgd": 1.0, "adam": 1.0}


def matrix_cases(skip: frozenset[tuple[str, str]] = frozenset(), rounds: int = 12) -> list[EffectCase]:
    rng = np.random.default_rng(5)
    machine = np.exp(rng.normal(0, 0.15, rounds))
    cases = []
    for opt in AXES["optimizer"]:
        for act in AXES["activation"]:
            level = 1000 * TRUE[opt] * TRUE[act] * (1.3 if opt == "adam" else 1.0)
            thr = level * machine * np.exp(rng.normal(0, 0.02, rounds))
            if (opt, act) not in skip:
                cases.append(EffectCase(f"{opt}-{act}", {"optimizer": opt, "activation": act},
                                        dict(enumerate(thr))))
    return cases


def test_each_parameter_value_is_compared_with_its_baseline_in_otherwise_equal_cases() -> None:
    effects = {(e.parameter, e.value): e for e in effects_by_parameter(matrix_cases(), AXES)}
    assert set(effects) == {("optimizer", "adam"), ("activation", "tanh"), ("activation", "gelu")}
    tanh = effects["activation", "tanh"]
    assert tanh.baseline == "relu" and tanh.pairs == 2 and tanh.missing == []
    assert sorted(tanh.pair_ids) == [("adam-relu", "adam-tanh"), ("sgd-relu", "sgd-tanh")]
    for (_, value), e in effects.items():
        truth = {"adam": 1.3}.get(str(value), TRUE[str(value)])
        assert e.effect is not None and e.effect.low <= truth <= e.effect.high, (value, e.effect)
        assert e.effect.significant and e.effect.n_pairs == 12
    assert effects["optimizer", "adam"].pairs == 3


def test_missing_cells_are_named_and_their_counterparts_left_out() -> None:
    cases = matrix_cases(skip=frozenset({("adam", "relu")}))
    cases.append(EffectCase("late", {"optimizer": "sgd", "activation": "relu", "amp": True}, {}))
    effects = {(e.parameter, e.value): e for e in effects_by_parameter(cases, AXES)}
    tanh = effects["activation", "tanh"]
    assert tanh.pairs == 1 and tanh.pair_ids == [("sgd-relu", "sgd-tanh")]
    assert tanh.missing == [
        "activation=tanh for optimizer=adam: no baseline case activation=relu (excluded, failed or skipped)",
        "activation=tanh for optimizer=sgd, amp=True: no such case (excluded, failed or skipped)"]
    adam = effects["optimizer", "adam"]
    assert adam.pairs == 2
    assert sorted(adam.missing) == [
        "optimizer=adam for activation=relu, amp=True: no such case (excluded, failed or skipped)",
        "optimizer=adam for activation=relu: no such case (excluded, failed or skipped)"]
    with pytest.raises(ValueError, match="same params"):
        twin = EffectCase("twin", {"optimizer": "sgd", "activation": "relu"}, {})
        effects_by_parameter([*cases, twin], AXES)


def test_a_pair_that_never_shared_a_round_has_no_effect() -> None:
    cases = [EffectCase("a", {"x": 1}, {0: 100.0, 1: 100.0}), EffectCase("b", {"x": 2}, {2: 110.0})]
    (only,) = effects_by_parameter(cases, {"x": [1, 2]})
    assert only.effect is None and only.pairs == 0
    assert only.missing == ["x=2: no round in which both it and its baseline ran"]
