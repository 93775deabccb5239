"""Timing logic: warm up, then time steps in windows until the throughput's confidence interval is
tight enough. Pure Python with an injectable clock, so the stopping rule is tested with a fake
clock, and torch-free, so the same code times CPU and CUDA steps (CUDA passes a ``sync``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# How many raw per-step times a case keeps for its distribution plot. Percentiles are computed
# from all steps before thinning; the cap keeps results files small for fast models.
MAX_STEP_SAMPLES = 2000


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    if n == 0:
        return math.nan
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    s = sorted(values)
    if not s:
        return math.nan
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics.

    The number of samples below the true median is Binomial(n, 1/2), so the interval between the
    k-th smallest and k-th largest sample covers the median with probability at least
    ``confidence``. Unlike a t-interval of the mean it assumes no normality, which matters because
    step times are skewed by stragglers (GC, other tenants of a shared machine). With fewer than
    ``MIN_CI_SAMPLES`` values it is (min, max), whose coverage falls short of ``confidence``."""
    # scipy.special's binomial CDF (bdtr) rather than scipy.stats: the same function, but an import
    # of 0.2 s instead of 1.2 s in every case process that computes an interval.
    from scipy.special import bdtr

    s = sorted(values)
    n = len(s)
    if n < 2:
        return (math.nan, math.nan)
    alpha = 1 - confidence
    # Largest 1-based rank k with P(X <= k - 1) <= alpha/2 (at least 1), by bisection: the CDF
    # grows with k.
    lo, hi = 1, n // 2 + 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if bdtr(mid - 1, n, 0.5) <= alpha / 2:
            lo = mid
        else:
            hi = mid - 1
    k = lo
    return (s[k - 1], s[n - k])


# Below 6 samples even the widest interval, (min, max), covers the median with probability
# 1 - 2 * 0.5**n < 95% (75% for 3 samples), so no 95% interval exists and no target can be met.
MIN_CI_SAMPLES = 6


def relative_half_width(values: Sequence[float]) -> float:
    """Half-width of the median's 95% CI over the median; infinite where no such CI exists."""
    if len(values) < MIN_CI_SAMPLES:
        return math.inf
    lo, hi = median_ci(values)
    m = median(values)
    if not (m > 0) or math.isnan(lo):
        return math.inf
    return (hi - lo) / 2 / m


class MeasureSettings(Protocol):
    """What ``measure`` reads of a case's settings: a suite's ``MeasureConfig`` as it is, without
    this module importing pydantic or the suite (read-only, so a frozen model fits)."""

    @property
    def warmup_steps(self) -> int: ...
    @property
    def min_time(self) -> float: ...
    @property
    def max_time(self) -> float: ...
    @property
    def target_ci(self) -> float: ...
    @property
    def window_time(self) -> float: ...
    @property
    def min_windows(self) -> int: ...


@dataclass
class Measurement:
    """Raw windows of one measured case. Times in seconds on ``time.perf_counter``'s clock, which
    is CLOCK_MONOTONIC on Linux and so shared with collector threads and other processes."""

    batch_size: int
    steps_per_window: int
    window_start: list[float] = field(default_factory=list)
    window_seconds: list[float] = field(default_factory=list)
    # This process's own window times; differs from window_seconds only with several ranks,
    # where window_seconds holds the slowest rank's time of each window.
    local_window_seconds: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    warmup_seconds: float = 0.0
    stop_reason: str = ""

    @property
    def window_throughput(self) -> list[float]:
        return [self.steps_per_window * self.batch_size / s for s in self.window_seconds]

    @property
    def measured_seconds(self) -> float:
        return sum(self.window_seconds)

    @property
    def steps(self) -> int:
        return self.steps_per_window * len(self.window_seconds)


def measure(step: Callable[[], object], settings: MeasureSettings, batch_size: int,
            sync: Callable[[], None] = lambda: None,
            clock: Callable[[], float] = time.perf_counter,
            step_times: bool = True,
            agree: Callable[[float], float] = lambda seconds: seconds) -> Measurement:
    """Warm up, calibrate the window length, then time windows of steps.

    ``sync`` is called only at window edges: on CUDA it waits for queued kernels, so a window's
    wall time covers exactly its steps, while steps inside a window stay asynchronous as in real
    training. ``step_times`` records a timestamp after every step; on the CPU each step is
    synchronous so these are true step times, on CUDA they would only time kernel launches, so the
    caller turns them off there (window means stand in for them).

    ``agree`` turns a local duration into the one all ranks use (the maximum over ranks in DDP), at
    window edges only. Every rank then sees the same window times, so all ranks pick the same
    window length and make the same stopping decision without another message, and a window's
    global throughput is all ranks' samples over the slowest rank's time."""
    # Warm-up: lazy initialisation, allocator growth, cuDNN autotuning and the first optimizer
    # step (which creates its state) are not what steady-state training costs.
    t_start = clock()
    for _ in range(settings.warmup_steps):
        step()
    sync()
    warm_end = clock()
    # Calibrate from a few timed steps so that one window lasts about ``window_time``: long
    # enough that clock resolution and the per-window sync are negligible, short enough to give
    # many windows for the interval.
    probe = 3
    for _ in range(probe):
        step()
    sync()
    per_step = max(agree((clock() - warm_end) / probe), 1e-9)
    k = max(1, round(settings.window_time / per_step))
    result = Measurement(batch_size=batch_size, steps_per_window=k, warmup_seconds=warm_end - t_start)
    stamps: list[float] = []
    record = stamps.append
    elapsed = 0.0
    while True:
        sync()
        t0 = clock()
        if step_times:
            prev = t0
            for _ in range(k):
                step()
                record(clock())
            for t in stamps:
                result.step_seconds.append(t - prev)
                prev = t
            stamps.clear()
        else:
            for _ in range(k):
                step()
        sync()
        t1 = clock()
        seconds = agree(t1 - t0)
        result.window_start.append(t0)
        result.window_seconds.append(seconds)
        result.local_window_seconds.append(t1 - t0)
        # Measured time, the same on every rank; the few microseconds between windows are left out.
        elapsed += seconds
        if elapsed >= settings.max_time:
            width = relative_half_width(result.window_throughput)
            met = width <= settings.target_ci and len(result.window_seconds) >= settings.min_windows
            result.stop_reason = "target_ci" if met else "max_time"
            break
        if (elapsed >= settings.min_time and len(result.window_seconds) >= settings.min_windows
                and relative_half_width(result.window_throughput) <= settings.target_ci):
            result.stop_reason = "target_ci"
            break
    return result


def thin(values: Sequence[float], limit: int = MAX_STEP_SAMPLES) -> list[float]:
    """Evenly spaced subsample (keeps order and the time structure of the series)."""
    n = len(values)
    if n <= limit:
        return list(values)
    return [values[int(i * n / limit)] for i in range(limit)]


def throughput_summary(thr: Sequence[float], target_ci: float) -> dict[str, object]:
    """Median, its 95% CI and whether the CI met its target, from per-window throughputs."""
    lo, hi = median_ci(thr)
    half = relative_half_width(thr)
    return {
        "median": median(thr),
        "mean": sum(thr) / len(thr),
        "ci95": [lo, hi],
        "ci_rel_half_width": None if math.isinf(half) else half,
        "ci_target": target_ci,
        "ci_target_met": half <= target_ci,
        "unit": "samples/s",
    }


def step_time_summary(steps_ms: Sequence[float], source: str) -> dict[str, object]:
    return {
        "p50": percentile(steps_ms, 50),
        "p95": percentile(steps_ms, 95),
        "p99": percentile(steps_ms, 99),
        "mean": sum(steps_ms) / len(steps_ms),
        "min": min(steps_ms),
        "max": max(steps_ms),
        "source": source,
    }


def summarize(m: Measurement, target_ci: float) -> dict[str, object]:
    """The ``metrics`` block of a case from its raw windows."""
    steps_ms = [s * 1000 for s in m.step_seconds] or [s * 1000 / m.steps_per_window for s in m.window_seconds]
    return {
        "throughput": throughput_summary(m.window_throughput, target_ci),
        "step_time_ms": step_time_summary(steps_ms, "per_step" if m.step_seconds else "window_mean"),
        "windows": len(m.window_seconds),
        "steps": m.steps,
        "steps_per_window": m.steps_per_window,
        "measured_s": m.measured_seconds,
        "warmup_s": m.warmup_seconds,
        "stop_reason": m.stop_reason,
    }


# --- trials ---------------------------------------------------------------------------------------
# In rounds (bench.rounds), a case process warms up once and then measures short trials when the
# coordinator asks, while other cases' processes wait. The two halves of ``measure`` above, apart.


@dataclass
class Calibration:
    """What a case learned before its first trial: how many steps fill one window."""

    steps_per_window: int
    warmup_seconds: float
    seconds_per_step: float


def calibrate(step: Callable[[], object], warmup_steps: int, window_time: float,
              sync: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.perf_counter,
              agree: Callable[[float], float] = lambda seconds: seconds) -> Calibration:
    """Warm up (lazy initialisation, allocator growth, autotuning and the optimizer's first step
    are not steady-state training), then time a few steps so that a window lasts about
    ``window_time``. ``agree`` makes every rank of a DDP case pick the same window length."""
    t_start = clock()
    for _ in range(warmup_steps):
        step()
    sync()
    warm_end = clock()
    probe = 3
    for _ in range(probe):
        step()
    sync()
    per_step = max(agree((clock() - warm_end) / probe), 1e-9)
    return Calibration(max(1, round(window_time / per_step)), warm_end - t_start, per_step)


def run_trial(step: Callable[[], object], steps_per_window: int, batch_size: int, seconds: float,
              sync: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.perf_counter,
              step_times: bool = True, agree: Callable[[float], float] = lambda s: s,
              min_windows: int = 1) -> Measurement:
    """Time windows of ``steps_per_window`` steps until ``seconds`` of measured time (and at least
    ``min_windows`` windows). ``sync`` runs at window edges only, as in ``measure``; ``agree``
    turns each window's time into the slowest rank's, so every rank stops after the same window."""
    result = Measurement(batch_size=batch_size, steps_per_window=steps_per_window)
    stamps: list[float] = []
    record = stamps.append
    elapsed = 0.0
    while elapsed < seconds or len(result.window_seconds) < min_windows:
        sync()
        t0 = clock()
        if step_times:
            prev = t0
            for _ in range(steps_per_window):
                step()
                record(clock())
            for t in stamps:
                result.step_seconds.append(t - prev)
                prev = t
            stamps.clear()
        else:
            for _ in range(steps_per_window):
                step()
        sync()
        t1 = clock()
        window = agree(t1 - t0)
        result.window_start.append(t0)
        result.window_seconds.append(window)
        result.local_window_seconds.append(t1 - t0)
        elapsed += window
    result.stop_reason = "trial_time"
    return result
