"""Compare two stored runs case by case (unpaired: they ran at different times): the change of each
metric as a ratio of medians with a 95% bootstrap confidence interval, a Mann-Whitney U test, a
correction for testing many cases at once, and a verdict per rule. The unit of each test is a
trial (a case's turn in one of its run's randomized rounds); for version-1 results, which have no
trials, the windows of each case's one stretch stand in, and the rows say so. Also the outputs of `bench compare`: a terminal table,
a Markdown summary for CI, and JSON.

Verdicts, for a rule such as ``throughput:-5%`` (``bench.rules``):
  regression    the change is significant (corrected p < alpha), its CI excludes zero, and the
                change (ratio of medians) is at least as bad as the threshold;
  improvement   the same, the other way;
  inconclusive  too few samples on either side (``min_samples``), a case that did not run in one
                of the runs, or otherwise a CI that reaches the threshold (either way): the
                data cannot tell whether the true change crosses it;
  unchanged     the CI lies strictly inside the thresholds (e.g. between -5% and +5%): whether
                or not the change is significant, it is smaller than the rule cares about.
A regression or improvement no larger than the *noise floor* is inconclusive instead: two runs made
at different times differ by the machine's drift between them, which no test on the runs' own
samples can see. The floor comes from ``bench aa`` (``--calibration``, ``bench.calibration``) or,
without one, from the runs themselves: how far a case's trial medians spread within each run
(p90/p10 - 1), since the drift between two runs minutes apart is of the same kind. ``bench ab``
pairs the two versions in one job and is not limited by it.
Metrics stored as one value per case (``peak_rss_mb``...) have no samples to test: their change is
a plain ratio, judged against the threshold alone (regression / improvement / unchanged).

Why these statistics: throughputs are skewed by stragglers (GC, other tenants), so medians and a
rank test are used rather than means and a t-test; the bootstrap needs no distribution
either. The bootstrap uses a fixed seed, so the same files always give the same verdicts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from bench.environment import differences, fingerprint
from bench.errors import BenchError, UsageError
from bench.records import CaseRecord, Environment, finite
from bench.results import Run, write_output
from bench.rules import Rule, pct, resolve_rules

if TYPE_CHECKING:
    from rich.console import Console

    from bench.calibration import CalibrationDoc

Verdict = Literal["regression", "improvement", "unchanged", "inconclusive"]
Correction = Literal["bh", "holm", "none"]
CORRECTION_NAMES: dict[str, str] = {"bh": "Benjamini-Hochberg", "holm": "Holm", "none": "none"}
VERDICT_ORDER: dict[str, int] = {"regression": 0, "improvement": 1, "inconclusive": 2, "unchanged": 3}

# Defaults of compare_runs, shown in every report header.
ALPHA = 0.05
MIN_SAMPLES = 5
RESAMPLES = 2000
RELATIVE_UNIT = "x reference (throughput relative to the machine-speed reference)"
SEED = 20240601


class EnvironmentMismatch(BenchError):
    """The two runs were measured on different machines or software (``--strict-env``)."""


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one case. ``change`` is new/base - 1 of the medians (or of the single values);
    ``ci95`` its 95% bootstrap interval and ``p_value`` the Mann-Whitney p-value after the
    correction for many cases; both None where the metric has no raw samples."""

    case_id: str
    metric: str
    base: float
    new: float
    change: float
    ci95: tuple[float, float] | None
    p_value: float | None
    verdict: Verdict
    message: str
    rule: str = ""
    n_base: int = 0
    n_new: int = 0
    p_raw: float | None = None
    unit: str = "trials"  # what one sample is: a trial in rounds, or a window of one stretch (version 1)
    noise_floor: float | None = None  # changes within it cannot be told from drift between the runs
    relative: bool = False  # tested on throughput relative to the machine-speed reference of each round
    raw_change: float | None = None  # the change of raw throughput, beside a relative one


@dataclass(frozen=True)
class Comparison:
    base_label: str
    new_label: str
    rows: list[MetricComparison]
    added: list[str]
    removed: list[str]
    env_differences: list[str]
    rules: tuple[Rule, ...] = ()
    alpha: float = ALPHA
    correction: Correction = "bh"
    base_env: Environment | None = None
    new_env: Environment | None = None
    floor_source: str = "the runs' own trials"

    def with_verdict(self, verdict: Verdict) -> list[MetricComparison]:
        return [r for r in self.rows if r.verdict == verdict]

    @property
    def regressions(self) -> list[MetricComparison]:
        return self.with_verdict("regression")

    def counts(self) -> dict[str, int]:
        return {v: len(self.with_verdict(v)) for v in VERDICT_ORDER}  # type: ignore[arg-type]


# --- statistics --------------------------------------------------------------------------------

@lru_cache(maxsize=256)
def _median_ranks(n: int, role: int, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """For ``resamples`` bootstrap resamples of n items: the sorted positions whose values average
    to each resample's median. Resampling indices and taking the values of their middle order
    statistics equals resampling values and taking the median, because sorting commutes with a
    monotone map. So the random part depends on n alone, is drawn once per n (and per side:
    ``role`` 0 for base, 1 for new, so the two sides are independent) and serves every case of
    that size: the bootstrap of a case costs O(resamples), not O(resamples * n)."""
    rng = np.random.default_rng([seed, n, role])
    idx = rng.integers(0, n, size=(resamples, n), dtype=np.int32)
    lo, hi = (n - 1) // 2, n // 2
    part = np.partition(idx, [lo, hi], axis=1)
    return part[:, lo], part[:, hi]


def bootstrap_medians(sorted_values: np.ndarray, role: int, resamples: int = RESAMPLES,
                      seed: int = SEED) -> np.ndarray:
    """Medians of ``resamples`` bootstrap resamples of ``sorted_values`` (sorted ascending)."""
    lo, hi = _median_ranks(len(sorted_values), role, resamples, seed)
    result: np.ndarray = (sorted_values[lo] + sorted_values[hi]) / 2
    return result


def ratio_cis(pairs: Sequence[tuple[np.ndarray, np.ndarray]], resamples: int = RESAMPLES, seed: int = SEED,
              confidence: float = 0.95) -> list[tuple[float, float]]:
    """Percentile bootstrap intervals of median(new)/median(base) - 1 for (base, new) pairs,
    resampling each side independently (the windows of two runs are not paired). The percentiles
    of all pairs are taken in one call."""
    if not pairs:
        return []
    ratios = np.stack([bootstrap_medians(np.sort(new), 1, resamples, seed)
                       / bootstrap_medians(np.sort(base), 0, resamples, seed) for base, new in pairs])
    tail = (1 - confidence) / 2 * 100
    bounds = np.percentile(ratios, [tail, 100 - tail], axis=1) - 1
    return [(float(lo), float(hi)) for lo, hi in bounds.T]


def ratio_ci(base: np.ndarray, new: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED,
             confidence: float = 0.95) -> tuple[float, float]:
    return ratio_cis([(base, new)], resamples, seed, confidence)[0]


def adjust(p_values: Sequence[float], method: Correction) -> list[float]:
    """p-values corrected for testing them together. Benjamini-Hochberg (scipy) keeps the share
    of false alarms among the flagged cases at alpha, and when nothing changed (an A/A run) the
    chance of any alarm at alpha; Holm keeps the chance of any false alarm at alpha in every case,
    at the cost of power."""
    if not p_values or method == "none":
        return list(p_values)
    p = np.asarray(p_values, dtype=float)
    if method == "bh":
        from scipy.stats import false_discovery_control

        return [float(v) for v in np.atleast_1d(false_discovery_control(p, method="bh"))]
    order = np.argsort(p)
    m = len(p)
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return [float(v) for v in out]


def mann_whitney(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Two-sided Mann-Whitney U p-values, equal to ``scipy.stats.mannwhitneyu``'s defaults.

    scipy picks the normal approximation (tie-corrected, with continuity correction) when both
    samples have more than 8 values or when there are ties; that is every real case (a run keeps
    at least 10 windows), and it is computed here for all pairs at once, because scipy's per-call
    overhead (about 1 ms) would dominate a 1,000-case comparison. Smaller samples without ties go
    to scipy for the exact distribution. test_compare.py checks the two agree."""
    from scipy.stats import mannwhitneyu, norm

    out = [math.nan] * len(pairs)
    fast: list[int] = []
    u_stats: list[float] = []
    sds: list[float] = []
    for i, (a, b) in enumerate(pairs):
        n1, n2 = len(a), len(b)
        values, inverse, counts = np.unique(np.concatenate([a, b]), return_inverse=True, return_counts=True)
        ties = len(values) < n1 + n2
        if (min(n1, n2) <= 8 and not ties) or min(n1, n2) == 0:
            out[i] = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
            continue
        # Average ranks: a value seen c times after k smaller values has rank k + (c + 1) / 2.
        avg_rank = np.cumsum(counts) - (counts - 1) / 2
        u1 = float(avg_rank[inverse[:n1]].sum()) - n1 * (n1 + 1) / 2
        n = n1 + n2
        tie_term = float(np.sum(counts.astype(float) ** 3 - counts))
        fast.append(i)
        u_stats.append(max(u1, n1 * n2 - u1) - n1 * n2 / 2 - 0.5)
        sds.append(math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)))))
    if fast:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.asarray(u_stats) / np.asarray(sds)
        p = np.clip(2 * norm.sf(z), 0, 1)
        for i, value in zip(fast, p, strict=True):
            out[i] = float(value)
    return out


# --- verdicts ----------------------------------------------------------------------------------

def judge(rule: Rule, change: float, ci: tuple[float, float] | None, p_value: float | None,
          alpha: float = ALPHA) -> Verdict:
    """The verdict of one change under one rule (see the module docstring)."""
    if ci is None or p_value is None:
        return "regression" if rule.is_worse(change) else "improvement" if rule.is_better(change) else "unchanged"
    significant = p_value < alpha and not ci[0] <= 0 <= ci[1]
    if significant and rule.is_worse(change):
        return "regression"
    if significant and rule.is_better(change):
        return "improvement"
    return "unchanged" if rule.within(ci) else "inconclusive"


def _message(verdict: Verdict, rule: Rule, case_id: str, base: float, new: float, change: float,
             ci: tuple[float, float] | None, p: float | None, correction: str, unit: str | None = None) -> str:
    if verdict == "regression":
        return "Regression: " + rule.failure_message(case_id, base, new, change, ci, p, correction, unit)
    seen = rule.observation(case_id, base, new, change, ci, p, correction, unit)
    size = pct(rule.threshold, signed=False)
    if verdict == "improvement":
        return f"Improvement: {seen}; better by at least the {size} of the rule {rule}."
    if verdict == "inconclusive":
        return (f"Inconclusive: {seen}; the interval reaches the {size} threshold of the rule {rule}, so the "
                f"data cannot tell whether the change crosses it (measure longer or repeat the case).")
    return f"Unchanged: {seen}; within the rule {rule}."


@dataclass(frozen=True)
class _Pending:
    """A metric with values on both sides, waiting for the batched tests and the correction."""

    case_id: str
    rule: Rule
    base: float
    new: float
    n_base: int
    n_new: int
    pair: int | None  # index into the sample pairs, None for a single-value metric
    unit: str = "value"
    floor: float | None = None
    raw: tuple[float, float] | None = None  # raw medians (base, new) when the values are relative
    note: str = ""  # why relative throughput was not used though both runs had it


def _inconclusive(case_id: str, rule: Rule, why: str, base: float = math.nan, new: float = math.nan,
                  n: tuple[int, int] = (0, 0)) -> MetricComparison:
    change = new / base - 1 if base > 0 and math.isfinite(new) else math.nan
    return MetricComparison(case_id, rule.metric, base, new, change, None, None, "inconclusive",
                            f"Inconclusive: case {case_id!r} {why}", str(rule), n[0], n[1], unit="-")


def _prepare(case_id: str, rule: Rule, base: Run, new: Run, b_case: CaseRecord, n_case: CaseRecord,
             min_samples: int, pairs: list[tuple[np.ndarray, np.ndarray]],
             calibration: CalibrationDoc | None = None) -> MetricComparison | _Pending:
    """The values of one metric of one case, or a finished row when they cannot be tested; sample
    pairs to test are appended to ``pairs``."""
    for case, run in ((b_case, base), (n_case, new)):
        if case.status != "ok":
            why = f": {case.error}" if case.error else ""
            return _inconclusive(case_id, rule, f"is {case.status} in {run.label}{why}")
    spec = rule.spec
    # Trials are the unit of inference: the windows of one stretch share its machine state. Only
    # where a side has no trials to speak of (version-1 results) do windows stand in, and say so.
    unit = "trials" if all(len(c.trials or []) >= 2 for c in (b_case, n_case)) else "windows"
    b_samples, n_samples = np.asarray(spec.samples(b_case, unit)), np.asarray(spec.samples(n_case, unit))
    raw: tuple[float, float] | None = None
    relative = [_relative(c) for c in (b_case, n_case)] if rule.metric == "throughput" and unit == "trials" else []
    sources = (_reference_source(b_case), _reference_source(n_case))
    note = ""
    if relative and relative[0] and relative[1] and sources[0] != sources[1]:
        # A companion runs at the case's thread count, the round's reference at the machine's: the
        # two ratios are different quantities, so only raw throughput compares.
        note = (f" Compared raw: the runs measured the machine-speed reference in different places "
                f"({base.label}: {_SOURCE_WORDS[sources[0]]}; {new.label}: {_SOURCE_WORDS[sources[1]]}).")
        relative = []
    if relative and relative[0] and relative[1]:
        # Both runs measured the machine-speed reference in every round: the test, the change and
        # the noise floor use throughput relative to it, in which the drift common to both cancels.
        raw = (float(np.median(b_samples)), float(np.median(n_samples)))
        b_samples, n_samples = np.asarray(relative[0]), np.asarray(relative[1])
    n = (len(b_samples), len(n_samples))
    if spec.samples_key is not None and min(n) > 0:
        b_value: float | None = float(np.median(b_samples))
        n_value: float | None = float(np.median(n_samples))
    else:
        b_value, n_value = spec.value(b_case), spec.value(n_case)
    for value, run in ((b_value, base), (n_value, new)):
        if value is None or value <= 0:
            return _inconclusive(case_id, rule, f"has no usable {rule.metric} in {run.label}")
    assert b_value is not None and n_value is not None
    if spec.samples_key is None:
        return _Pending(case_id, rule, b_value, n_value, 0, 0, None)
    if min(n) < min_samples:
        return _inconclusive(case_id, rule, f"has too few {rule.metric} {unit} to test ({n[0]} in {base.label}, "
                                            f"{n[1]} in {new.label}; need {min_samples})", b_value, n_value, n)
    pairs.append((b_samples, n_samples))
    floor = (calibration.floor(case_id) if calibration is not None
             else own_floor(b_samples, n_samples) if unit == "trials" else None)
    return _Pending(case_id, rule, b_value, n_value, n[0], n[1], len(pairs) - 1, unit, floor, raw, note)


_SOURCE_WORDS = {"case": "in the case's own process", "round": "in a process of its own each round",
                 "mixed": "in both places"}


def _reference_source(case: CaseRecord) -> str:
    """Where the case's references were measured (``bench.reference``); results written before
    companions measured them in the round only."""
    sources = {t.reference_source or "round" for t in case.trials or [] if t.reference is not None}
    return sources.pop() if len(sources) == 1 else "mixed"


def _relative(case: CaseRecord) -> list[float] | None:
    """The case's trials over the reference of their rounds, when every trial has one."""
    trials = case.trials or []
    if not trials or any(t.reference is None for t in trials):
        return None
    return [t.median / t.reference for t in trials if t.reference is not None]


def own_floor(*samples: Iterable[float]) -> float | None:
    """The noise floor from the runs themselves: the largest p90/p10 - 1 of a case's trial values
    within one run (at least 5 trials)."""
    from bench.calibration import spread

    found = [spread([float(v) for v in s], block=1) for s in samples]
    known = [f for f in found if f is not None]
    return max(known) if known else None


def _within_floor(verdict: Verdict, change: float, floor: float | None) -> bool:
    return verdict in ("regression", "improvement") and floor is not None and abs(change) <= floor


def compare_runs(base: Run, new: Run, rules: Sequence[Rule | str] | None = None, *, alpha: float = ALPHA,
                 correction: Correction = "bh", min_samples: int = MIN_SAMPLES, resamples: int = RESAMPLES,
                 seed: int = SEED, calibration: CalibrationDoc | None = None) -> Comparison:
    """Compare every case the two runs share, for every rule's metric (default: throughput:-5%).
    A change within the noise floor (module docstring) is inconclusive. Raises UsageError when
    they share no case."""
    chosen = resolve_rules(rules)
    base_cases = {c.id: c for c in base.cases}
    new_cases = {c.id: c for c in new.cases}
    common = [i for i in new_cases if i in base_cases]
    added = [i for i in new_cases if i not in base_cases]
    removed = [i for i in base_cases if i not in new_cases]
    if not common:
        raise UsageError(f"{new.path}: cases: no case id in common with {base.path} "
                         f"(base has {_few(removed)}; new has {_few(added)})")
    # Values first; the tests run on all sample pairs at once, and verdicts wait for the correction
    # across every test.
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    prepared = [_prepare(case_id, rule, base, new, base_cases[case_id], new_cases[case_id], min_samples, pairs,
                         calibration)
                for case_id in common for rule in chosen]
    raw = mann_whitney(pairs)
    adjusted = adjust(raw, correction)
    cis = ratio_cis(pairs, resamples, seed)
    name = CORRECTION_NAMES[correction]
    source = (f"`bench aa` calibration of {calibration.created[:10]}" if calibration is not None
              else "the spread of the runs' own trials")
    rows = []
    for item in prepared:
        if isinstance(item, MetricComparison):
            rows.append(item)
            continue
        k = item.pair
        ci, p, p_raw = (cis[k], adjusted[k], raw[k]) if k is not None else (None, None, None)
        change = item.new / item.base - 1
        verdict = judge(item.rule, change, ci, p, alpha)
        unit = RELATIVE_UNIT if item.raw is not None else None
        message = _message(verdict, item.rule, item.case_id, item.base, item.new, change, ci, p, name, unit)
        if _within_floor(verdict, change, item.floor):
            assert item.floor is not None
            seen = item.rule.observation(item.case_id, item.base, item.new, change, ci, p, name, unit)
            verdict = "inconclusive"
            message = (f"Inconclusive: {seen}; within the noise floor of ±{item.floor:.1%} between runs made at "
                       f"different times ({source}), so the runs cannot tell it from the machine's drift; "
                       f"`bench ab` measures both versions in pairs and can.")
        raw_change = None
        if item.raw is not None:
            raw_change = item.raw[1] / item.raw[0] - 1
            message += (f" Raw throughput {item.raw[0]:,.4g} to {item.raw[1]:,.4g} samples/s ({pct(raw_change)}); "
                        f"the relative figure divides each trial by the machine-speed reference measured with it.")
        message += item.note
        rows.append(MetricComparison(
            item.case_id, item.rule.metric, item.base, item.new, change, ci, p, verdict, message,
            str(item.rule), item.n_base, item.n_new, p_raw, item.unit, item.floor, item.raw is not None, raw_change))
    return Comparison(base.label, new.label, rows, added, removed,
                      differences(base.environment, new.environment), chosen, alpha, correction,
                      base.environment, new.environment, source)


def _few(ids: list[str], limit: int = 5) -> str:
    if not ids:
        return "no case"
    shown = ", ".join(ids[:limit])
    return f"{len(ids)} case(s): {shown}" + (", ..." if len(ids) > limit else "")


# --- environment -------------------------------------------------------------------------------

def check_environment(comparison: Comparison, strict: bool) -> None:
    if strict and comparison.env_differences:
        raise EnvironmentMismatch(f"--strict-env: the runs' environments differ: {'; '.join(comparison.env_differences)}")


# --- outputs -----------------------------------------------------------------------------------

def _sorted_rows(comparison: Comparison) -> list[MetricComparison]:
    return sorted(comparison.rows, key=lambda r: (VERDICT_ORDER[r.verdict], r.change if r.verdict != "improvement"
                                                  else -r.change, r.case_id))


def to_json(comparison: Comparison) -> dict[str, Any]:
    """Every verdict and the settings that produced them (NaN written as null)."""
    return finite({
        "base": comparison.base_label,
        "new": comparison.new_label,
        "rules": [str(r) for r in comparison.rules],
        "alpha": comparison.alpha,
        "correction": comparison.correction,
        "paired": False,
        "floor_source": comparison.floor_source,
        "counts": comparison.counts(),
        "regression": bool(comparison.regressions),
        "added": comparison.added,
        "removed": comparison.removed,
        "env_differences": comparison.env_differences,
        "fingerprints": {"base": _fingerprint(comparison.base_env), "new": _fingerprint(comparison.new_env)},
        "rows": [asdict(r) for r in comparison.rows],
    })


def _fingerprint(env: Environment | None) -> dict[str, str]:
    return fingerprint(env) if env is not None else {}


def write_json(comparison: Comparison, path: Path) -> None:
    write_output(path, json.dumps(to_json(comparison), indent=1, allow_nan=False) + "\n")


def write_markdown(comparison: Comparison, path: Path) -> None:
    write_output(path, to_markdown(comparison))


def _md(text: str) -> str:
    """Text for a Markdown table cell: no HTML, no cell breaks."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|").replace("\n", " "))


def _ci_text(ci: tuple[float, float] | None) -> str:
    return f"{pct(ci[0])} to {pct(ci[1])}" if ci else "-"


def _p_text(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def _num(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:,.4g}"


_ICON = {"regression": "🔴", "improvement": "🟢", "inconclusive": "🟡", "unchanged": "⚪"}


def _md_table(rows: list[MetricComparison]) -> list[str]:
    lines = ["| case | metric | base | new | change | 95% CI | p | verdict |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        change = pct(r.change) if math.isfinite(r.change) else "-"
        if r.relative and r.raw_change is not None:
            change += f" relative (raw {pct(r.raw_change)})"
        lines.append(f"| {_md(r.case_id)} | {r.metric} | {_num(r.base)} | {_num(r.new)} | {change} | "
                     f"{_ci_text(r.ci95)} | {_p_text(r.p_value)} | {_ICON[r.verdict]} {r.verdict} |")
    return lines


def to_markdown(comparison: Comparison) -> str:
    """A summary for a CI job summary or a pull-request comment: the outcome and thresholds
    first, regressions first, unchanged rows folded away."""
    c = comparison
    counts = c.counts()
    outcome = (f"🔴 **{counts['regression']} regression(s)**" if counts["regression"] else "✅ **no regression**")
    rest = ", ".join(f"{n} {v}" for v, n in counts.items() if v != "regression" and n)
    floors = [r.noise_floor for r in c.rows if r.noise_floor is not None]
    floor_text = (f" The smallest change these runs can detect is their noise floor, ±{min(floors):.1%} to "
                  f"±{max(floors):.1%} by case (from {c.floor_source}): a change within it is inconclusive, "
                  f"whatever the test says. `bench ab` pairs the versions in one job and resolves smaller ones."
                  if floors else "")
    lines = [f"## bench compare (unpaired): `{_md(c.base_label)}` → `{_md(c.new_label)}`", "",
             f"{outcome}" + (f" ({rest})" if rest else ""), "",
             f"Rules: {', '.join(f'`{r}`' for r in c.rules)}; a change is a regression when it is significant "
             f"(Mann-Whitney U, {CORRECTION_NAMES[c.correction]}-corrected p < {c.alpha:g}), its 95% bootstrap "
             f"CI of the ratio of medians excludes 0, and it is at least the threshold. The runs are unpaired "
             f"(made at different times); each test's samples are the cases' trials"
             + (", or for version-1 results the windows of one stretch, which understate run-to-run noise"
                if any(r.unit == "windows" for r in c.rows) else "") + "." + floor_text
             + (" Throughput is compared relative to the machine-speed reference measured with every trial of "
                "both runs (in a CPU case's own process right after the trial, otherwise in the same round), which "
                "cancels most of the drift between the runs; the raw change is shown beside it." if any(r.relative for r in c.rows) else "")
             + "".join(f" `{r.metric}` has one value per run and is judged by the ratio alone."
                       for r in c.rules if r.spec.samples_key is None), ""]
    if c.env_differences:
        lines += ["> [!WARNING]", "> The runs' environments differ, so changes may come from the machine, "
                  "not the code:"] + [f"> - {_md(d)}" for d in c.env_differences] + [""]
    a, b = _fingerprint(c.base_env), _fingerprint(c.new_env)
    lines += ["<details><summary>Environment fingerprints</summary>", "", "| | base | new |", "| --- | --- | --- |"]
    lines += [f"| {k}{' ⚠️' if a[k] != b[k] else ''} | {_md(a[k])} | {_md(b[k])} |" for k in a]
    lines += ["", "</details>", ""]
    ordered = _sorted_rows(c)
    shown = [r for r in ordered if r.verdict != "unchanged"]
    folded = [r for r in ordered if r.verdict == "unchanged"]
    if shown:
        lines += [*_md_table(shown), ""]
        lines += [f"- {_md(r.message)}" for r in shown if r.verdict == "regression"]
        lines += [""] if counts["regression"] else []
    if folded:
        lines += [f"<details><summary>{len(folded)} unchanged</summary>", "", *_md_table(folded)]
        lines += ["", "</details>", ""]
    if c.added:
        lines.append(f"Added cases (only in new): {', '.join(f'`{_md(i)}`' for i in c.added)}")
    if c.removed:
        lines.append(f"Removed cases (only in base): {', '.join(f'`{_md(i)}`' for i in c.removed)}")
    return "\n".join(lines).rstrip() + "\n"


_STYLE = {"regression": "bold red", "improvement": "green", "inconclusive": "yellow", "unchanged": "dim"}


def print_comparison(comparison: Comparison, console: Console | None = None) -> None:
    """The terminal table, environment warnings and one sentence per regression."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    out = console or Console()
    if console is None and not out.is_terminal:
        out = Console(width=160)  # a CI log: no terminal width to fit, so do not wrap the cells
    err = Console(stderr=True)
    for diff in comparison.env_differences:
        err.print(f"[bold yellow]warning:[/] environments differ: {escape(diff)}", highlight=False, soft_wrap=True)
    table = Table(title=f"{escape(comparison.base_label)} → {escape(comparison.new_label)} (unpaired)")
    for col, justify in [("case", "left"), ("metric", "left"), ("base", "right"), ("new", "right"),
                         ("change", "right"), ("95% CI", "right"), ("p", "right"), ("verdict", "left")]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in _sorted_rows(comparison):
        change = pct(r.change) if math.isfinite(r.change) else "-"
        table.add_row(escape(r.case_id), r.metric, _num(r.base), _num(r.new), change, _ci_text(r.ci95),
                      _p_text(r.p_value), f"[{_STYLE[r.verdict]}]{r.verdict}[/]")
    out.print(table)
    for r in comparison.rows:
        if r.verdict in ("regression", "inconclusive"):
            out.print(escape(r.message), style=_STYLE[r.verdict], highlight=False, soft_wrap=True)
    if comparison.added:
        out.print(f"added (only in {escape(comparison.new_label)}): {escape(', '.join(comparison.added))}")
    if comparison.removed:
        out.print(f"removed (only in {escape(comparison.base_label)}): {escape(', '.join(comparison.removed))}")
    floors = [r.noise_floor for r in comparison.rows if r.noise_floor is not None]
    if floors:
        out.print(f"unpaired runs: changes within the noise floor (±{min(floors):.1%} to ±{max(floors):.1%}, from "
                  f"{comparison.floor_source}) are inconclusive; bench ab resolves smaller ones", highlight=False)
    counts = comparison.counts()
    out.print(", ".join(f"{n} {v}" for v, n in counts.items()), highlight=False)
