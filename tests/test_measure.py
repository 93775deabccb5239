"""The timing logic with a fake clock: deterministic, and no real time is taken."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import binom

from bench.measure import (
    MIN_CI_SAMPLES,
    Measurement,
    MeasureSettings,
    measure,
    median,
    median_ci,
    percentile,
    relative_half_width,
    summarize,
    thin,
)
from bench.suite import MeasureConfig

# Binary fractions keep the fake clock's sums exact.
STEP = 1 / 64


class FakeClock:
    """A clock that only moves when a fake step runs; it logs steps and syncs in order."""

    def __init__(self, duration: Callable[[int], float]) -> None:
        self.now = 0.0
        self.calls = 0
        self.duration = duration
        self.events: list[str] = []

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += self.duration(self.calls)
        self.calls += 1
        self.events.append("step")

    def sync(self) -> None:
        self.events.append("sync")


def settings(**kw: float) -> MeasureConfig:
    # The suite's own settings type: measure() takes it as it is.
    base = {"warmup_steps": 5, "min_time": 1.0, "max_time": 10.0, "target_ci": 0.01, "window_time": 0.125,
            "min_windows": 10}
    base.update(kw)
    return MeasureConfig.model_validate(base)


def run(clock: FakeClock, s: MeasureSettings, batch_size: int = 32, **kw: object) -> Measurement:
    return measure(clock.step, s, batch_size, sync=clock.sync, clock=clock, **kw)  # type: ignore[arg-type]


def test_steady_steps_stop_at_the_target_once_min_windows_are_measured() -> None:
    clock = FakeClock(lambda i: STEP)
    m = run(clock, settings(min_time=1.0, min_windows=10))
    # 8 steps of 1/64 s make a 0.125 s window; min_time is met after 8 windows, min_windows after 10.
    assert m.steps_per_window == 8
    assert m.window_seconds == [0.125] * 10
    assert m.stop_reason == "target_ci"
    assert m.window_throughput == [8 * 32 / 0.125] * 10
    assert clock.calls == 5 + 3 + 8 * 10
    assert m.warmup_seconds == 5 * STEP
    assert m.steps == 80


def test_steady_steps_stop_at_the_target_once_min_time_is_measured() -> None:
    clock = FakeClock(lambda i: STEP)
    m = run(clock, settings(min_time=1.0, min_windows=6))
    assert len(m.window_seconds) == 8
    assert m.measured_seconds == 1.0
    assert m.stop_reason == "target_ci"


def test_noisy_steps_run_until_max_time_and_no_longer() -> None:
    warm = 5 + 3

    def duration(i: int) -> float:
        # Warm-up and calibration at 1/64 s (so 8 steps a window); then windows alternate 0.125 s
        # and 0.25 s, whose median CI spans both values and never gets within 1%.
        if i < warm:
            return STEP
        return STEP if ((i - warm) // 8) % 2 == 0 else 2 * STEP

    clock = FakeClock(duration)
    m = run(clock, settings(max_time=2.0))
    assert m.stop_reason == "max_time"
    assert m.measured_seconds == 2.0
    assert m.window_seconds == [0.125, 0.25] * 5 + [0.125]
    assert relative_half_width(m.window_throughput) > 0.01


def test_a_met_target_does_not_count_before_min_windows_even_at_max_time() -> None:
    clock = FakeClock(lambda i: 1.0)
    m = run(clock, settings(window_time=0.1, min_time=1.0, max_time=5.0, min_windows=10))
    assert m.steps_per_window == 1
    assert m.window_seconds == [1.0] * 5
    assert m.stop_reason == "max_time"


@pytest.mark.parametrize(("step_s", "window_s", "expected"), [
    (STEP, 0.125, 8),
    (0.001, 0.1, 100),
    (0.3, 0.1, 1),       # a step longer than a window: one step per window
    (1e-5, 0.1, 10_000),
])
def test_the_window_holds_the_steps_that_fill_window_time(step_s: float, window_s: float, expected: int) -> None:
    clock = FakeClock(lambda i: step_s)
    m = run(clock, settings(window_time=window_s, max_time=2.5 * expected * step_s, min_time=1e-9))
    assert m.steps_per_window == expected


def test_calibration_ignores_slow_warm_up_steps() -> None:
    # The first steps (lazy init, allocator growth) are 100 times slower; the window is still sized
    # from steady steps.
    clock = FakeClock(lambda i: 100 * STEP if i < 5 else STEP)
    m = run(clock, settings())
    assert m.steps_per_window == 8
    assert m.warmup_seconds == 5 * 100 * STEP


def test_sync_happens_only_at_window_edges() -> None:
    clock = FakeClock(lambda i: STEP)
    m = run(clock, settings(min_windows=6, min_time=0.5))
    windows = len(m.window_seconds)
    expected = ["step"] * 5 + ["sync"] + ["step"] * 3 + ["sync"]
    expected += (["sync"] + ["step"] * 8 + ["sync"]) * windows
    assert clock.events == expected


def test_per_step_times_are_recorded_on_the_cpu_and_can_be_turned_off() -> None:
    warm = 5 + 3
    clock = FakeClock(lambda i: STEP if i < warm or i % 2 else 2 * STEP)
    m = run(clock, settings(min_windows=6, min_time=0.5, target_ci=0.5))
    assert len(m.step_seconds) == m.steps
    assert sorted(set(m.step_seconds)) == [STEP, 2 * STEP]
    off = run(FakeClock(lambda i: STEP), settings(min_windows=6, min_time=0.5), step_times=False)
    assert off.step_seconds == []
    assert len(off.window_seconds) == 6


def test_agree_makes_every_rank_use_the_slowest_window_time() -> None:
    clock = FakeClock(lambda i: STEP)
    m = run(clock, settings(min_windows=6, min_time=0.5), agree=lambda s: 2 * s)
    # The probe agreed on 2/64 s a step: 4 steps make a window of 1/16 s locally, 1/8 s agreed.
    assert m.steps_per_window == 4
    assert set(m.local_window_seconds) == {0.0625}
    assert set(m.window_seconds) == {0.125}


# ---------------------------------------------------------------------------------------------
# Statistics on known inputs


@pytest.mark.parametrize(("n", "low", "high"), [
    (6, 1, 6),       # the smallest n with a 95% interval: (min, max), coverage 96.9%
    (10, 2, 9),      # coverage 97.9%
    (20, 6, 15),     # coverage 95.9%
    (100, 40, 61),   # coverage 96.5%
])
def test_median_ci_is_the_textbook_order_statistic_interval(n: int, low: int, high: int) -> None:
    values = list(range(1, n + 1))
    random.Random(n).shuffle(values)
    assert median_ci(values) == (low, high)


@pytest.mark.parametrize("n", range(MIN_CI_SAMPLES, 200))
def test_median_ci_covers_at_least_95_percent_and_is_the_tightest_such_interval(n: int) -> None:
    lo, _ = median_ci(list(range(1, n + 1)))
    k = int(lo)  # with values 1..n the low end is the rank k
    assert 1 - 2 * binom.cdf(k - 1, n, 0.5) >= 0.95
    assert 1 - 2 * binom.cdf(k, n, 0.5) < 0.95


def test_fewer_than_six_samples_have_no_95_percent_interval() -> None:
    assert median_ci([1.0, 2.0, 3.0]) == (1.0, 3.0)
    assert math.isnan(median_ci([1.0])[0])
    # Even constant samples cannot claim a 95% interval below six windows.
    assert relative_half_width([100.0] * 5) == math.inf
    assert relative_half_width([100.0] * 6) == 0.0


def test_relative_half_width_is_half_the_interval_over_the_median() -> None:
    values = [float(v) for v in range(91, 111)]  # median 100.5, CI (96, 105)
    assert median(values) == 100.5
    assert relative_half_width(values) == pytest.approx((105 - 96) / 2 / 100.5)


def test_percentile_interpolates_linearly_like_numpy() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20, 30, 40, 50], 95) == 48.0
    assert percentile([5, 1, 3], 0) == 1
    assert percentile([5, 1, 3], 100) == 5
    assert math.isnan(percentile([], 50))
    rng = random.Random(0)
    for _ in range(50):
        values = [rng.expovariate(1.0) for _ in range(rng.randint(1, 40))]
        q = rng.uniform(0, 100)
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_thin_keeps_order_and_at_most_the_limit() -> None:
    assert thin([1.0, 2.0, 3.0], limit=5) == [1.0, 2.0, 3.0]
    assert thin([float(i) for i in range(10)], limit=5) == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_summarize_reports_throughput_ci_and_step_percentiles() -> None:
    m = Measurement(batch_size=10, steps_per_window=2, window_start=[float(i) for i in range(10)],
                    window_seconds=[0.1] * 9 + [0.2],
                    step_seconds=[0.05] * 18 + [0.1, 0.1], warmup_seconds=0.5, stop_reason="max_time")
    out = summarize(m, target_ci=0.05)
    thr = out["throughput"]
    assert isinstance(thr, dict)
    assert thr["median"] == pytest.approx(200.0)
    assert thr["ci95"] == [pytest.approx(200.0), pytest.approx(200.0)]   # n=10: ranks 2 and 9
    assert thr["ci_target_met"] is True
    assert thr["unit"] == "samples/s"
    steps = out["step_time_ms"]
    assert isinstance(steps, dict)
    assert steps["p50"] == pytest.approx(50.0)
    assert steps["max"] == pytest.approx(100.0)
    assert steps["source"] == "per_step"
    assert (out["windows"], out["steps"], out["stop_reason"]) == (10, 20, "max_time")


def test_a_single_window_gives_no_interval_and_misses_any_target() -> None:
    m = Measurement(batch_size=4, steps_per_window=1, window_start=[0.0], window_seconds=[0.5],
                    step_seconds=[0.5])
    thr = summarize(m, target_ci=0.5)["throughput"]
    assert isinstance(thr, dict)
    assert thr["median"] == 8.0
    assert all(math.isnan(v) for v in thr["ci95"])
    assert (thr["ci_rel_half_width"], thr["ci_target_met"]) == (None, False)
