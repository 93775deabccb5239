"""Regression rules: ``--fail-on throughput:-5%`` parsed into an object that knows which way is
worse, judges a measured change, and explains its verdict in a sentence naming the case, the
metric, the change and its confidence interval (pytest-benchmark's checks, plus the statistics).

The metrics a rule can name are listed in ``METRICS``: where a case stores raw samples of a metric
(per-window throughput, per-step times) the comparison tests them; the others (peak memory) are one
number per case and are compared as a plain ratio."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.errors import UsageError
from bench.registry import Registry

if TYPE_CHECKING:
    from bench.records import CaseRecord


@dataclass(frozen=True)
class MetricSpec:
    """Where a metric lives in a case record and which direction is better."""

    unit: str
    value_path: tuple[str, ...]  # attributes of a case's metrics: the single summary value
    samples_key: str | None  # an attribute of a case's samples: raw samples, or None when there are none
    higher_is_better: bool

    def value(self, case: CaseRecord) -> float | None:
        node: Any = case.metrics
        for key in self.value_path:
            node = getattr(node, key, None)
        return float(node) if isinstance(node, (int, float)) and math.isfinite(node) else None

    def samples(self, case: CaseRecord, unit: str = "windows") -> list[float]:
        """The values a comparison tests: one per trial (``unit`` "trials": the trial medians, or
        the step time they imply), or the raw window or step samples of a version-1 stretch."""
        if self.samples_key is None or case.samples is None:
            return []
        if unit == "trials" and case.trials:
            medians = [t.median for t in case.trials]
            if self.samples_key == "window_throughput":
                return medians
            # Step time follows from throughput: a step processes the same samples in every trial.
            s = case.samples
            steps = case.metrics.steps_per_window if case.metrics and case.metrics.steps_per_window else 1
            per_step = s.window_throughput[0] * s.window_s[0] / steps if s.window_s else 0.0
            return [1000 * per_step / m for m in medians] if per_step > 0 else []
        raw: list[float] = getattr(case.samples, self.samples_key)
        return [float(v) for v in raw]


METRICS: Registry[MetricSpec] = Registry("metric")
METRICS.add("throughput", MetricSpec("samples/s", ("throughput", "median"), "window_throughput", True),
            "training samples per second, tested on the per-window samples (median)")
METRICS.add("step_time_ms", MetricSpec("ms", ("step_time_ms", "p50"), "step_time_ms", False),
            "time of one training step, tested on the per-step samples (median)")
METRICS.add("step_time_p95_ms", MetricSpec("ms", ("step_time_ms", "p95"), None, False),
            "95th percentile of the step time, one value per case (plain ratio)")
METRICS.add("peak_rss_mb", MetricSpec("MiB", ("peak_rss_mb",), None, False),
            "peak resident memory of the case process, one value per case (plain ratio)")
METRICS.add("cuda_peak_allocated_mb", MetricSpec("MiB", ("cuda_peak_allocated_mb",), None, False),
            "peak CUDA memory allocated by tensors, one value per case (plain ratio)")
METRICS.add("cuda_peak_reserved_mb", MetricSpec("MiB", ("cuda_peak_reserved_mb",), None, False),
            "peak CUDA memory reserved by the caching allocator, one value per case (plain ratio)")

_RULE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*:\s*([+-])\s*(\d+(?:\.\d+)?)\s*%\s*$")


def pct(value: float, signed: bool = True) -> str:
    """A fraction as a percentage for sentences: -0.0712 -> '-7.1%'."""
    return f"{value:+.1%}" if signed else f"{abs(value):.1%}"


@dataclass(frozen=True)
class Rule:
    """Fail when ``metric`` changes by ``threshold`` (a signed fraction) or more in that direction:
    ``throughput:-5%`` fails on a drop of 5% or more, ``peak_rss_mb:+10%`` on a rise of 10% or
    more. The same size of change the other way counts as an improvement."""

    metric: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Rule:
        match = _RULE.match(text)
        if match is None:
            raise UsageError(f"--fail-on {text!r}: write METRIC:-N% or METRIC:+N%, e.g. throughput:-5% "
                             f"(a drop of 5% fails) or peak_rss_mb:+10% (a rise of 10% fails)")
        metric, sign, number = match.groups()
        if metric not in METRICS:
            raise UsageError(f"--fail-on {text!r}: {METRICS.unknown_message(metric)}")
        size = float(number) / 100
        if size <= 0 or (sign == "-" and size >= 1):  # a drop of 100% would be zero
            raise UsageError(f"--fail-on {text!r}: the threshold must be above 0% "
                             f"{'and below 100% ' if sign == '-' else ''}(got {number}%)")
        return cls(metric, -size if sign == "-" else size)

    @property
    def spec(self) -> MetricSpec:
        return METRICS.get(self.metric)

    def __str__(self) -> str:
        return f"{self.metric}:{self.threshold * 100:+g}%"

    def describe(self) -> str:
        way = "drops" if self.threshold < 0 else "rises"
        return f"{self.metric} {way} by {pct(self.threshold, signed=False)} or more"

    def is_worse(self, change: float) -> bool:
        """The change is at least as bad as the threshold."""
        return change <= self.threshold if self.threshold < 0 else change >= self.threshold

    def is_better(self, change: float) -> bool:
        """The change is at least as large as the threshold, the other way."""
        return change >= -self.threshold if self.threshold < 0 else change <= -self.threshold

    def within(self, ci: tuple[float, float]) -> bool:
        """The whole interval lies strictly between the threshold and its mirror image (-5% and
        +5%): the change is known to be smaller than the rule cares about. An interval that
        reaches either threshold cannot tell which side the true change lies on."""
        size = abs(self.threshold)
        return -size < ci[0] and ci[1] < size

    def observation(self, case_id: str, base: float, new: float, change: float,
                    ci: tuple[float, float] | None, p_value: float | None, correction: str,
                    unit: str | None = None) -> str:
        """What was measured, e.g. ``case 'mlp-sgd': throughput fell by 9.1% (95% CI -10.3% to
        -7.8%, p = 0.0002 after Benjamini-Hochberg), from 6,656 to 6,052 samples/s``."""
        way = "rose" if change > 0 else "fell" if change < 0 else "did not change"
        stats = []
        if ci is not None:
            stats.append(f"95% CI {pct(ci[0])} to {pct(ci[1])}")
        if p_value is not None:
            stats.append(f"p = {p_value:.2g}" + (f" after {correction}" if correction != "none" else ""))
        if not stats:
            stats.append("one value per run, so no test")
        by = f" by {pct(change, signed=False)}" if change else ""
        return (f"case {case_id!r}: {self.metric} {way}{by} ({', '.join(stats)}), "
                f"from {base:,.4g} to {new:,.4g} {unit or self.spec.unit}")

    def failure_message(self, case_id: str, base: float, new: float, change: float,
                        ci: tuple[float, float] | None, p_value: float | None, correction: str,
                        unit: str | None = None) -> str:
        """The sentence a failed check prints: the observation, then the rule that it breaks."""
        return (f"{self.observation(case_id, base, new, change, ci, p_value, correction, unit)}; "
                f"the rule {self} fails when {self.describe()}.")


DEFAULT_RULES: tuple[Rule, ...] = (Rule("throughput", -0.05),)


def resolve_rules(texts: Sequence[str | Rule] | None) -> tuple[Rule, ...]:
    """The rules a comparison applies: the defaults, each replaced by a given rule for the same
    metric, plus the given rules for other metrics. ``--fail-on peak_rss_mb:+10%`` therefore keeps
    the throughput check; ``--fail-on throughput:-3%`` tightens it."""
    given = [t if isinstance(t, Rule) else Rule.parse(t) for t in texts or ()]
    seen: dict[str, Rule] = {}
    for rule in given:
        if rule.metric in seen:
            raise UsageError(f"--fail-on: two rules for {rule.metric} ({seen[rule.metric]} and {rule}); give one")
        seen[rule.metric] = rule
    defaults = [r for r in DEFAULT_RULES if r.metric not in seen]
    return (*defaults, *given)
