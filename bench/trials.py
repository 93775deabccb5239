"""Statistics of trials in randomized rounds: pure functions, no torch, pandas or clock.

A suite is measured in *rounds*; each round runs every case once for a short *trial*, in an order
drawn afresh from a recorded seed (``round_orders``). The unit of inference is the trial (Kalibera &
Jones: the degrees of freedom are the number of top-level repetitions). The windows inside a trial
share its machine state, so they only give the trial its level (``Trial.median``) and reveal a
warm-up or a drift inside it (``detect_drift``); no interval is computed from them.

Assumptions, and what the intervals therefore cover:

- Given what the machine did during the run, a case's trials in different rounds are independent:
  each round's order is random and each trial's noise its own (exactly so with ``balanced=False``;
  the balanced design draws positions without replacement in a block, checked by simulation). They
  need not be identically distributed (the machine drifts), so ``estimate`` covers a median over
  *this run*: of the throughput the case shows in a trial at a random position of a random round
  (rounds weighted equally). Another hour on this machine needs repeated runs (``bench history``).
- Drift is shared by the cases of one round, and a case's effect is a factor (additive in logs) that
  does not depend on the machine's state. The log ratio of two cases in one round is then the log
  effect, plus the difference of two trials' noise, plus the drift between their two positions;
  random order makes the last term symmetric about zero, and two equally noisy cases make the whole
  symmetric about the log effect. ``paired_effect`` covers that effect itself, beyond this run.

Coverage of the 95% intervals simulated in ``tests/test_trials.py`` (4 cases; log machine speed
AR(1), 8% spread, correlation 0.5 from one round to the next; 3% trial noise; 2000 runs of 8-30
rounds): ``estimate`` covers the run's median in 99.6-100% (one stretch's windows pooled by
``median_ci``: 27%), ``paired_effect`` the true effect in 94-96%. The machine's long-run centre,
not claimed, is covered in 94-99% if rounds barely correlate, but 82-94% at 0.5 between rounds.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import combinations, pairwise
from typing import Any

from bench.measure import median, median_ci

CONFIDENCE = 0.95
DRIFT_THRESHOLD = 0.10  # a trial whose levels differ by more after its warm-up is not stable
WARMUP_Z = 3.0  # leading windows this many noise units below the later level are warm-up
NOISE_FLOOR = 0.005  # log units; no two windows repeat closer, so a flat series does not split
# Standardised log throughputs are clipped here before segmenting, so one straggler window (GC,
# another tenant) moves a segment's mean no more than a window three noise units off would.
CLIP = 3.0


def min_trials(confidence: float = CONFIDENCE) -> int:
    """Fewest values for a distribution-free ``confidence`` interval of a median or of a symmetric
    centre: the widest, (min, max), misses with probability 2 * 0.5**n (6 for 95%)."""
    return max(1, math.ceil(math.log2(2 / (1 - confidence)) - 1e-9))


def ratio_to_pct(ratio: float) -> float:
    """A ratio as a signed percentage change: 0.969 -> -3.1."""
    return (ratio - 1) * 100


def _positive(values: Sequence[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if any(not (v > 0 and math.isfinite(v)) for v in out):
        raise ValueError(f"{what} must be positive and finite, got {out}")
    return out


def _t_interval(logs: Sequence[float], confidence: float) -> tuple[float, float]:
    """Student-t interval of the mean of ``logs`` (n >= 2): exact for normal values."""
    from scipy.special import stdtrit

    mean, n = statistics.fmean(logs), len(logs)
    half = float(stdtrit(n - 1, 1 - (1 - confidence) / 2)) * statistics.stdev(logs) / math.sqrt(n)
    return mean - half, mean + half


# --- the schedule -------------------------------------------------------------------------------

def _shuffle(items: list[Any], rng: random.Random) -> None:
    # Fisher-Yates on rng.random() alone: Python keeps random()'s sequence for a seed across
    # versions, not shuffle()'s, and a recorded seed must replay its orders.
    for i in range(len(items) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        items[i], items[j] = items[j], items[i]


def _williams(k: int) -> list[list[int]]:
    """Williams design: k rows (even k) or k rows and their mirror images (odd k)."""
    base = [0] + [(j + 1) // 2 if j % 2 else k - j // 2 for j in range(1, k)]  # 0, 1, k-1, 2, ...
    rows = [[(b + i) % k for b in base] for i in range(k)]
    return rows if k % 2 == 0 else rows + [row[::-1] for row in rows]


def round_orders(case_ids: Sequence[str], rounds: int, seed: int, *,
                 balanced: bool = True) -> list[list[str]]:
    """The order of the cases in each of ``rounds`` rounds, replayed exactly from ``seed``
    (``random.Random(seed).random()``, whose sequence Python keeps across versions).

    Balanced (default): rounds come in blocks of a Williams design, each block with a fresh random
    assignment of cases to symbols and a random order of its rows. In each block of k rounds (k
    cases) every case takes every position once, and over a full block (k rounds for even k, 2k for
    odd k) every case directly precedes every other equally often, so neither a position nor a
    neighbour favours a case. In a last partial block each case takes each position at most once
    per k rounds. Each case's position in a round is uniform at random, and any two cases are
    equally likely in either order. ``balanced=False``: an independent uniform permutation per
    round."""
    ids = list(case_ids)
    if len(set(ids)) != len(ids):
        raise ValueError(f"case ids must be distinct: {ids}")
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    rng = random.Random(seed)
    k = len(ids)
    orders: list[list[int]] = []
    while len(orders) < rounds:
        block: list[list[int]] = [list(range(k))]  # unbalanced: one row, relabelled at random
        if balanced and k > 1:
            design = _williams(k)
            # Odd k: the square and its mirror image, each a Latin square, in random order.
            halves = [design[:k], design[k:]] if k % 2 else [design]
            if rng.random() < 0.5:
                halves.reverse()
            block = []
            for half in halves:
                _shuffle(half, rng)
                block += half
        label = list(range(k))
        _shuffle(label, rng)
        orders.extend([label[s] for s in row] for row in block[:rounds - len(orders)])
    return [[ids[i] for i in row] for row in orders]


# --- one case's throughput ----------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """A case's throughput from its trials. ``point`` is the median of the trial medians.

    ``low``..``high`` is a ``confidence`` interval for the median over this run (module docstring):
    with n >= ``min_trials`` trials (6 at 95%), the distribution-free order-statistic interval of
    the median; with 2 to 5, a t-interval of the mean log trial median (which equals that median only
    where log throughput is symmetric; it assumes normality and never meets a target); else None."""

    point: float
    low: float | None
    high: float | None
    n: int
    method: str
    confidence: float = CONFIDENCE

    @property
    def rel_half_width(self) -> float:
        """Half the interval's width over the point (a fraction); infinite without an interval."""
        if self.low is None or self.high is None or not self.point > 0:
            return math.inf
        return (self.high - self.low) / 2 / self.point


def estimate(trial_medians: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Median of per-trial medians, with an interval from the variation between trials.

    Why order statistics: given the run, the count of trials below the run's median is a sum of
    independent Bernoulli variables (module docstring) with mean n/2, whose tails are no heavier
    than the binomial's (Hoeffding 1956), so the binomial ranks of ``median_ci`` cover it with at
    least ``confidence``, without assuming a shape and however the trials differ. A bootstrap
    would assume more and, for the median of 8-30 values, undercover."""
    values = _positive(trial_medians, "trial medians")
    n, point = len(values), median(values)
    if n < 2:
        return Estimate(point, None, None, n, "median of trial medians; no interval", confidence)
    if n >= min_trials(confidence):
        low, high = median_ci(values, confidence)
        return Estimate(point, low, high, n, "median of trial medians; order-statistic interval",
                        confidence)
    lo, hi = _t_interval([math.log(v) for v in values], confidence)
    return Estimate(point, min(math.exp(lo), point), max(math.exp(hi), point), n,
                    "median of trial medians; t-interval on log trial medians (few trials: assumes "
                    "log-normal)", confidence)


def target_met(est: Estimate, target: float) -> bool:
    """Whether ``est`` has a distribution-free interval no wider than ``target`` (relative
    half-width); a t-interval from fewer than ``min_trials`` trials never counts."""
    return est.n >= min_trials(est.confidence) and est.rel_half_width <= target


def rounds_needed(trial_medians: Sequence[float], target: float,
                  confidence: float = CONFIDENCE) -> int | None:
    """About how many more rounds would bring the relative half-width within ``target``: 0 if it
    is met, None with fewer than 2 trials (no spread known). A projection, not a promise: for each
    total n it predicts the interval between the order statistics that ``median_ci`` would take, of
    log-normal trials with the present sd of the log trial medians, and returns the first n that
    meets the target (for large n, (1.96 * 1.2533 * sd / target)**2 at 95%: width ~ 1/sqrt(n))."""
    from scipy.special import ndtri

    if not target > 0:
        raise ValueError(f"target must be positive, got {target}")
    values = _positive(trial_medians, "trial medians")
    n = len(values)
    if target_met(estimate(values, confidence), target):
        return 0
    if n < 2:
        return None
    sd = statistics.stdev([math.log(v) for v in values])
    z = float(ndtri(1 - (1 - confidence) / 2))

    def width(total: int) -> float:  # predicted relative half-width with ``total`` trials
        if total > 1000:  # the binomial's normal limit: sorting millions of ranks would take minutes
            low = math.floor((total - z * math.sqrt(total)) / 2)
        else:
            low = int(median_ci(range(total), confidence)[0])  # 0-based rank of the lower bound
        q = float(ndtri(1 - (low + 1) / (total + 1)))
        return math.sinh(q * sd)

    total = max(n + 1, min_trials(confidence), math.floor((z * 1.2533 * sd / target) ** 2 * 0.8))
    while width(total) > target:
        total += max(1, total // 50)
    return total - n


# --- inside one trial ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DriftResult:
    """What the windows of one trial show about its own stability."""

    warmup: int
    """Leading windows to trim: those before the first within ``WARMUP_Z`` noise units of (or
    above) the median of the windows after the longest warm-up allowed (a quarter of the windows
    or ``min_size``, leaving at least ``min_size``)."""
    change: float
    """Signed relative change (later over earlier, minus 1) between the two segments whose median
    levels differ most, after the warm-up; 0.0 with a single segment."""
    stable: bool
    """No two segments after the warm-up differ by more than the threshold (default 10%)."""
    breakpoints: list[int]
    """Window indices (into the untrimmed series) where a new segment starts after the warm-up."""
    noise: float = 0.0
    """Robust window-to-window noise of log throughput after the warm-up (about a relative sd)."""


def _noise(y: Sequence[float]) -> float:
    import numpy as np

    d = np.abs(np.diff(np.asarray(y, dtype=float)))
    if len(d) == 0:
        return NOISE_FLOOR
    # Mean absolute successive difference (sd = mean|d| * sqrt(pi) / 2 for normal noise): a MAD of
    # 5-50 windows is so noisy that 10-18% of flat series split. A level shift adds one difference;
    # the cap at 4x the median difference keeps a straggler from hiding a real change.
    return max(float(np.mean(np.minimum(d, 4 * np.median(d)))) * math.sqrt(math.pi) / 2, NOISE_FLOOR)


def detect_drift(windows: Sequence[float], *, min_size: int = 3, penalty: float | None = None,
                 threshold: float = DRIFT_THRESHOLD) -> DriftResult:
    """Warm-up and level changes inside one trial, from its per-window throughputs.

    Warm-up: leading windows slower than the later level (``DriftResult.warmup``). Changes: exact
    penalised segmentation (``ruptures.KernelCPD`` with a linear kernel, the L2 cost of PELT in C)
    of the log throughputs standardised by their robust noise and clipped at +-``CLIP``; segments
    hold at least ``min_size`` windows; ``penalty`` defaults to 3 ln(m) + 1 in noise units for m
    windows (calibrated). Simulated, 10% noise, 1000 series each: stationary trials are flagged
    unstable in 1-4% (normal or t3 noise, 6-50 windows), lose a window to a false warm-up in 6% (6
    windows), at most 3.4% (10-50); a 20% step halfway is caught in 11% (6 windows), 49% (10), 81%
    (20), 92% (30), 98% (40), 99% (50)."""
    import numpy as np

    y = np.log(np.asarray(_positive(windows, "window throughputs")))
    n = len(y)
    limit = min(max(min_size, n // 4), n - min_size)
    warmup = 0
    if limit > 0:
        # Judged by windows that cannot be warm-up, so that its own steps do not inflate the noise.
        later = y[limit:]
        bar = float(np.median(later)) - WARMUP_Z * _noise(later)
        while warmup < limit and y[warmup] < bar:
            warmup += 1
    rest = y[warmup:]
    m = len(rest)
    sigma = _noise(rest)
    starts: list[int] = []
    if m >= 2 * min_size:
        import ruptures

        z = np.clip((rest - np.median(rest)) / sigma, -CLIP, CLIP).reshape(-1, 1)
        pen = 3 * math.log(m) + 1 if penalty is None else penalty
        ends = ruptures.KernelCPD(kernel="linear", min_size=min_size).fit(z).predict(pen=pen)
        starts = [int(e) for e in ends[:-1]]
    bounds = [0, *starts, m]
    levels = [float(np.median(rest[a:b])) for a, b in pairwise(bounds)]
    shift = max((levels[j] - levels[i] for i, j in combinations(range(len(levels)), 2)),
                key=abs, default=0.0)
    change = math.expm1(shift)
    return DriftResult(warmup, change, abs(change) <= threshold, [warmup + s for s in starts], sigma)


@dataclass(frozen=True)
class Trial:
    """One case's trial, the unit of inference: it ran in ``round`` at index ``position`` of that
    round's order, starting at ``start`` seconds on the clock shared by all trials of the run."""

    round: int
    position: int
    start: float
    windows: tuple[float, ...]
    """Per-window throughputs in samples/s, in time order, warm-up included."""
    trimmed: int = 0
    """Leading windows dropped from ``median`` as warm-up."""
    drift: float = 0.0
    """Relative change between the trial's own segments after the warm-up (``DriftResult.change``)."""
    stable: bool = True
    """Whether that change is within the drift threshold."""

    @property
    def median(self) -> float:
        """Median throughput of the windows after the warm-up: the trial's one value."""
        return median(self.windows[self.trimmed:])


def trial_from_windows(round: int, position: int, start: float, windows: Sequence[float], *,
                       min_size: int = 3, threshold: float = DRIFT_THRESHOLD) -> Trial:
    """A ``Trial`` with its warm-up trimmed and its drift measured by ``detect_drift``."""
    found = detect_drift(windows, min_size=min_size, threshold=threshold)
    return Trial(round, position, start, tuple(float(w) for w in windows), found.warmup,
                 found.change, found.stable)


# --- paired effects -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Effect:
    """A ratio other/base from rounds in which both ran, e.g. 0.969 for -3.1%.

    ``low``..``high`` is a ``confidence`` interval for the effect itself (module docstring): with
    ``n_pairs`` >= ``min_trials`` rounds, the distribution-free Wilcoxon signed-rank interval of the
    centre of symmetry of the per-round log ratios; with 2 to 5 (at 95%), a t-interval of their
    mean (assumes normality)."""

    point: float
    low: float
    high: float
    n_pairs: int
    """Rounds in which both cases ran (the unit: one log ratio per round)."""
    method: str
    confidence: float = CONFIDENCE

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 1.0 (no change)."""
        return self.low > 1 or self.high < 1

    def describe(self) -> str:
        """E.g. ``-3.1% [-4.0, -2.2]``."""
        return (f"{ratio_to_pct(self.point):+.1f}% "
                f"[{ratio_to_pct(self.low):+.1f}, {ratio_to_pct(self.high):+.1f}]")


@cache
def _signed_rank_k(n: int, confidence: float) -> int:
    """Largest k with P(T+ <= k - 1) <= alpha/2 for the signed-rank statistic T+ of n values
    (exact null distribution up to 300, normal beyond); 0 when no such k exists."""
    import numpy as np

    alpha = 1 - confidence
    total = n * (n + 1) // 2
    if n > 300:
        from scipy.special import ndtri

        sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
        return math.floor(total / 2 - 0.5 + float(ndtri(alpha / 2)) * sd) + 1
    p = np.zeros(total + 1)
    p[0] = 1.0
    for r in range(1, n + 1):  # rank r has a plus sign with probability 1/2
        shifted = np.zeros_like(p)
        shifted[r:] = p[:-r]
        p = (p + shifted) / 2
    return int(np.count_nonzero(np.cumsum(p) <= alpha / 2 + 1e-12))


def effect_from_logs(logs: Sequence[float], confidence: float) -> Effect | None:
    """Hodges-Lehmann estimate and interval from independent log ratios, one per round here (module
    docstring) or one per A/B pair (``bench.pairs``); None with fewer than 2."""
    import numpy as np

    n = len(logs)
    if n < 2:
        return None
    x = np.asarray(logs, dtype=float)
    i, j = np.triu_indices(n)
    walsh = np.sort((x[i] + x[j]) / 2)
    point = float(np.median(walsh))
    k = _signed_rank_k(n, confidence)
    if k > 0:
        low, high = float(walsh[k - 1]), float(walsh[len(walsh) - k])
        method = "Hodges-Lehmann of per-round log ratios; Wilcoxon signed-rank interval"
    else:
        low, high = _t_interval(list(x), confidence)
        low, high = min(low, point), max(high, point)
        method = "Hodges-Lehmann of per-round log ratios; t-interval (few rounds: assumes normal)"
    return Effect(math.exp(point), math.exp(low), math.exp(high), n, method, confidence)


def _log_ratios(base: Mapping[int, float], other: Mapping[int, float]) -> dict[int, float]:
    common = sorted(set(base) & set(other))
    b = _positive([base[r] for r in common], "trial medians")
    o = _positive([other[r] for r in common], "trial medians")
    return {r: math.log(y / x) for r, x, y in zip(common, b, o, strict=True)}


def paired_effect(base: Mapping[int, float], other: Mapping[int, float],
                  confidence: float = CONFIDENCE) -> Effect | None:
    """The effect other/base from the rounds in which both ran (round -> trial median); None with
    fewer than 2 such rounds.

    The unit is a round's log ratio log(other/base), in which the round's shared drift cancels.
    Point: exp of the Hodges-Lehmann estimate (median of the Walsh averages), the centre of symmetry
    that the interval covers; near-normal ratios give it more precision than the median, an odd
    round moves it little. Interval: exp of the Walsh averages at the signed-rank ranks, exact for
    independent log ratios symmetric about the effect, however they differ otherwise."""
    return effect_from_logs(list(_log_ratios(base, other).values()), confidence)


@dataclass(frozen=True)
class EffectCase:
    """A measured case as ``effects_by_parameter`` sees it."""

    id: str
    params: Mapping[str, Hashable]
    """Flat values of its swept parameters, canonical and hashable (made so by the caller)."""
    trials: Mapping[int, float]
    """Round -> trial median; rounds it did not run in are absent."""


@dataclass(frozen=True)
class ParameterEffect:
    """The effect of setting ``parameter`` to ``value`` instead of ``baseline``, pooled over every
    pair of cases that differ in that parameter alone."""

    parameter: str
    value: Hashable
    baseline: Hashable
    effect: Effect | None
    """Pooled over the pairs: each round's log ratios averaged over the pairs that ran in it, then
    one interval over rounds; so it covers the effect averaged (in logs) over the pairs, if equal
    across machine states. None with fewer than 2 rounds."""
    pairs: int
    """Case pairs that ran together in at least one round."""
    missing: list[str] = field(default_factory=list)
    """One sentence for each cell of this value or its baseline that has no counterpart."""
    pair_ids: list[tuple[str, str]] = field(default_factory=list)
    """(baseline case id, case id) of each pair counted in ``pairs``."""


def _describe(parameter: str, value: Hashable, context: Mapping[str, Hashable],
              axes: Mapping[str, Sequence[Hashable]]) -> str:  # "a=x for b=y, c=z"
    names = [a for a in axes if a in context] + sorted(k for k in context if k not in axes)
    return f"{parameter}={value}" + " for " * bool(names) + ", ".join(f"{k}={context[k]}" for k in names)


def effects_by_parameter(cases: Sequence[EffectCase], axes: Mapping[str, Sequence[Hashable]],
                         confidence: float = CONFIDENCE) -> list[ParameterEffect]:
    """For every swept parameter of ``axes`` (its values in matrix order, the first the baseline)
    and each of its other values, the effect pooled over the pairs of cases whose params are equal
    except for that parameter (baseline vs value). Cases are matched on all their params, so unlike
    cases are never compared; a case without the parameter takes no part."""
    cells: dict[frozenset[tuple[str, Hashable]], EffectCase] = {}
    for case in cases:
        key = frozenset(case.params.items())
        if key in cells:
            raise ValueError(f"cases {cells[key].id!r} and {case.id!r} have the same params")
        cells[key] = case
    out = []
    for parameter, values in axes.items():
        for value in values[1:]:
            baseline = values[0]
            sides: dict[frozenset[tuple[str, Hashable]], dict[Hashable, EffectCase]] = {}
            for case in cases:
                if parameter in case.params and case.params[parameter] in (baseline, value):
                    context = frozenset((k, v) for k, v in case.params.items() if k != parameter)
                    sides.setdefault(context, {})[case.params[parameter]] = case
            by_round: dict[int, list[float]] = {}
            missing: list[str] = []
            pair_ids: list[tuple[str, str]] = []
            for context, side in sides.items():
                where = _describe(parameter, value, dict(context), axes)
                if baseline not in side:
                    missing.append(f"{where}: no baseline case {parameter}={baseline} "
                                   "(excluded, failed or skipped)")
                elif value not in side:
                    missing.append(f"{where}: no such case (excluded, failed or skipped)")
                else:
                    ratios = _log_ratios(side[baseline].trials, side[value].trials)
                    if not ratios:
                        missing.append(f"{where}: no round in which both it and its baseline ran")
                        continue
                    pair_ids.append((side[baseline].id, side[value].id))
                    for r, d in ratios.items():
                        by_round.setdefault(r, []).append(d)
            logs = [sum(ds) / len(ds) for _, ds in sorted(by_round.items())]
            out.append(ParameterEffect(parameter, value, baseline, effect_from_logs(logs, confidence),
                                       len(pair_ids), missing, pair_ids))
    return out
