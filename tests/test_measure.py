"""The timing logic with a fake clock: deterministic, and no real time is taken."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import binom

from bench.measure import Calibration, Measurement, calibrate, median_ci, percentile, run_trial, thin

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


def calibrated(clock: FakeClock, warmup_steps: int = 5, window_time: float = 0.125,
               agree: Callable[[float], float] = lambda s: s) -> Calibration:
    return calibrate(clock.step, warmup_steps, window_time, clock.sync, clock, agree)


def trial(clock: FakeClock, steps_per_window: int, seconds: float, **kw: object) -> Measurement:
    return run_trial(clock.step, steps_per_window, 32, seconds, clock.sync, clock, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("step_s", "window_s", "expected"), [
    (STEP, 0.125, 8),
    (0.001, 0.1, 100),
    (0.3, 0.1, 1),       # a step longer than a window: one step per window
    (1e-5, 0.1, 10_000),
])
def test_the_window_holds_the_steps_that_fill_window_time(step_s: float, window_s: float, expected: int) -> None:
    assert calibrated(FakeClock(lambda i: step_s), window_time=window_s).steps_per_window == expected


def test_calibration_ignores_slow_warm_up_steps() -> None:
    # The first steps (lazy init, allocator growth) are 100 times slower; the window is still sized
    # from steady steps.
    cal = calibrated(FakeClock(lambda i: 100 * STEP if i < 5 else STEP))
    assert cal.steps_per_window == 8
    assert cal.warmup_seconds == 5 * 100 * STEP


def test_a_trial_times_windows_until_its_seconds_are_measured() -> None:
    m = trial(FakeClock(lambda i: STEP), steps_per_window=8, seconds=1.0)
    assert m.window_seconds == [0.125] * 8
    assert m.window_throughput == [8 * 32 / 0.125] * 8
    assert m.steps == 64 and m.stop_reason == "trial_time"


def test_a_trial_measures_min_windows_even_when_its_seconds_are_up() -> None:
    m = trial(FakeClock(lambda i: 1.0), steps_per_window=1, seconds=0.5, min_windows=5)
    assert m.window_seconds == [1.0] * 5


def test_sync_happens_only_at_window_edges() -> None:
    clock = FakeClock(lambda i: STEP)
    cal = calibrated(clock)
    assert clock.events == ["step"] * 5 + ["sync"] + ["step"] * 3 + ["sync"]
    clock.events.clear()
    m = trial(clock, cal.steps_per_window, seconds=0.5)
    assert len(m.window_seconds) == 4
    assert clock.events == (["sync"] + ["step"] * 8 + ["sync"]) * 4


def test_per_step_times_are_recorded_on_the_cpu_and_can_be_turned_off() -> None:
    clock = FakeClock(lambda i: STEP if i % 2 else 2 * STEP)
    m = trial(clock, steps_per_window=8, seconds=1.0)
    assert len(m.step_seconds) == m.steps
    assert sorted(set(m.step_seconds)) == [STEP, 2 * STEP]
    off = trial(FakeClock(lambda i: STEP), steps_per_window=8, seconds=0.5, step_times=False)
    assert off.step_seconds == []
    assert len(off.window_seconds) == 4


def test_agree_makes_every_rank_use_the_slowest_window_time() -> None:
    clock = FakeClock(lambda i: STEP)
    cal = calibrated(clock, agree=lambda s: 2 * s)
    # The probe agreed on 2/64 s a step: 4 steps make a window of 1/16 s locally, 1/8 s agreed.
    assert cal.steps_per_window == 4
    m = trial(clock, cal.steps_per_window, seconds=0.5, agree=lambda s: 2 * s)
    assert set(m.local_window_seconds) == {0.0625}
    assert set(m.window_seconds) == {0.125}
    assert len(m.window_seconds) == 4  # every rank stops after the same agreed time


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


@pytest.mark.parametrize("n", range(6, 200))
def test_median_ci_covers_at_least_95_percent_and_is_the_tightest_such_interval(n: int) -> None:
    lo, _ = median_ci(list(range(1, n + 1)))
    k = int(lo)  # with values 1..n the low end is the rank k
    assert 1 - 2 * binom.cdf(k - 1, n, 0.5) >= 0.95
    assert 1 - 2 * binom.cdf(k, n, 0.5) < 0.95


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


