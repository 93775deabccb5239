"""Statistics of A/B comparisons (``bench ab``): pure functions, no torch, clock or I/O.

A *pair* is one short measurement of the base side and one of the new side, back to back, in a
random order balanced over every two pairs. Both halves of a pair see nearly the same machine
state, so the pair's log ratio log(new/base) carries the code's effect and little of the drift that
moves the machine's speed by 10-30% over minutes. Pairs taken from the same two processes share
those processes' own speed (``bench.ab`` says why it differs between starts), so the unit of
inference is the *launch*: one start of both sides, whose log ratio is the median of its pairs'.
Never the windows inside a half, nor the pairs of one launch, as if independent.

Assumptions, and what an interval therefore covers: the launches' log ratios are independent (each
launch starts fresh processes, its pairs' order is random) and symmetric about the effect (the
order is balanced, and which side a process's luck favours is random). The Hodges-Lehmann estimate
with its Wilcoxon signed-rank interval then covers the effect itself, as a ratio of throughputs, at
the stated confidence (99% by default, as Pinpoint's p <= 0.01); with fewer than 8 launches no
exact 99% interval exists and a t-interval on the logs stands in (``trials.effect_from_logs``).

Three answers, as Pinpoint: with ``threshold`` t,

- ``unchanged``: the interval lies inside (1/(1+t), 1+t): any change is smaller than t;
- ``regression`` (``improvement``): the interval lies below 1/(1+t) (above 1+t): the change is
  significant and larger than t;
- otherwise undecided: more launches, up to a budget; then ``inconclusive``, with the smallest
  change these launches could have flagged and about how many would settle it.

Looking at the data after every few launches and stopping at the first answer (a sequential
design) makes a wrong answer likelier than one look would. It stays rare because a wrong
``regression`` needs the whole 99% interval beyond the threshold, and ``bench ab`` then confirms every
flagged case with fresh launches; the false-alarm rate is measured, not derived
(``benchmarks/detection.py``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bench import trials

CONFIDENCE = 0.99
# The default margin: PyTorch's own CI gates at 1.5-2.5%; with both sides in one process a launch of 20
# pairs here is precise to about 2%, so 10-14 launches can tell a 5% change from one within 2%.
THRESHOLD = 0.02

Answer = Literal["unchanged", "regression", "improvement"]


def pair_orders(pairs: int, seed: int) -> list[bool]:
    """For each pair, whether the base side runs first. Balanced in blocks of two (one of each
    order, which first drawn at random), so that a drift that always favours the first (or the
    second) half cancels within every two pairs; replayable from ``seed``."""
    rng = random.Random(seed)
    out: list[bool] = []
    while len(out) < pairs:
        first = rng.random() < 0.5
        out.extend((first, not first))
    return out[:pairs]


@dataclass(frozen=True)
class PairStats:
    """What ``n`` pairs say about the ratio new/base of throughputs."""

    n: int
    ratio: float  # Hodges-Lehmann estimate, as a ratio (0.95: the new side is 5% slower)
    low: float
    high: float
    confidence: float
    p: float  # two-sided Wilcoxon signed-rank test of "no change"
    sd: float  # standard deviation of the per-unit log ratios (noise of one unit)
    method: str
    unit: str = "pairs"  # what ``n`` counts

    @property
    def half_width(self) -> float:
        """Half the interval's width in log units (about a relative half-width)."""
        return (math.log(self.high) - math.log(self.low)) / 2

    def describe(self) -> str:
        """E.g. ``-4.8% [-6.0, -3.5] (99% CI, 120 pairs)``."""
        return (f"{pct(self.ratio)} [{pct(self.low, sign=True)[:-1]}, {pct(self.high, sign=True)[:-1]}] "
                f"({self.confidence:.0%} CI, {self.n} {self.unit})")


def pct(ratio: float, sign: bool = True) -> str:
    """A ratio as a signed percentage change: 0.952 -> '-4.8%'."""
    return f"{(ratio - 1) * 100:+.1f}%" if sign else f"{abs(ratio - 1) * 100:.1f}%"


def analyse(log_ratios: Sequence[float], confidence: float = CONFIDENCE, unit: str = "pairs") -> PairStats | None:
    """Estimate, interval and test from independent log ratios log(new/base), one per pair or one
    per launch (``unit``); None with fewer than 2."""
    import numpy as np
    from scipy.stats import wilcoxon

    effect = trials.effect_from_logs(log_ratios, confidence)
    if effect is None:
        return None
    x = np.asarray(log_ratios, dtype=float)
    if not np.any(x):
        p = 1.0
    elif "t-interval" in effect.method:
        # Too few units for the signed-rank test to reach the confidence at all (with 6, its
        # smallest two-sided p is 1/32): the test that matches the interval, a t-test on the logs.
        from scipy.stats import ttest_1samp

        p = float(ttest_1samp(x, 0.0).pvalue) if np.std(x) > 0 else 0.0
    else:
        p = float(wilcoxon(x, zero_method="zsplit").pvalue)
    return PairStats(len(x), effect.point, effect.low, effect.high, confidence, p,
                     float(np.std(x, ddof=1)) if len(x) > 1 else 0.0, effect.method.replace("per-round", "per-unit"),
                     unit)


def answer(stats: PairStats, threshold: float = THRESHOLD) -> Answer | None:
    """The three answers (module docstring), or None while undecided."""
    bound = math.log1p(threshold)
    low, high = math.log(stats.low), math.log(stats.high)
    if high < -bound:
        return "regression"
    if low > bound:
        return "improvement"
    if -bound < low and high < bound:
        return "unchanged"
    return None


def detectable(stats: PairStats, threshold: float = THRESHOLD) -> float:
    """The smallest change (relative, e.g. 0.05) that pairs as noisy as these, as many, would have
    called a regression or an improvement about half the time: the threshold plus the interval's
    half-width."""
    return math.expm1(math.log1p(threshold) + stats.half_width)


def units_needed(stats: PairStats, threshold: float = THRESHOLD) -> int | None:
    """About how many units (launches) in all would give an answer if the estimate stayed where it is: the
    interval's half-width shrinks as 1/sqrt(n), and an answer needs it narrower than the distance
    from the estimate to the threshold. None when the estimate sits on the threshold."""
    gap = abs(abs(math.log(stats.ratio)) - math.log1p(threshold))
    if gap < 1e-4 or stats.half_width <= 0:
        return None
    return max(stats.n + 1, math.ceil(stats.n * (stats.half_width / gap) ** 2))


def adjust(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values: a case's answer across many cases keeps the false
    discovery rate at the level its own p-value had."""
    if not pvalues:
        return []
    from scipy.stats import false_discovery_control

    return [float(p) for p in false_discovery_control(list(pvalues), method="bh")]
