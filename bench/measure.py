"""Timing logic inside a case's process: warm up and size a window once (``calibrate``), then time
windows of steps for one trial when asked (``run_trial``); and the order statistics the trials'
estimates use. Pure Python with an injectable clock, so it is tested with a fake clock, and
torch-free, so the same code times CPU and CUDA steps (CUDA passes a ``sync``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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


def thin(values: Sequence[float], limit: int = MAX_STEP_SAMPLES) -> list[float]:
    """Evenly spaced subsample (keeps order and the time structure of the series)."""
    n = len(values)
    if n <= limit:
        return list(values)
    return [values[int(i * n / limit)] for i in range(limit)]


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


# --- trials ---------------------------------------------------------------------------------------
# In rounds (bench.rounds), a case process warms up once and then measures short trials when the
# coordinator asks, while other cases' processes wait.


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
