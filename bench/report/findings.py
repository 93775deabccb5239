"""Findings: the few sentences a reader wants before any table (the fastest and slowest cases, the
largest effect of each swept parameter, cases that were unstable or missed their interval target,
what did not run, and what the intervals rest on), one list per run."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.records import EffectRecord
from bench.report.effects import effect_texts
from bench.report.model import Block, Bullets, CaseRow, Context, Note, number
from bench.results import Run

MAX_NAMED = 3  # cases named in one sentence; the rest are counted (the results table has them all)
# Why a case stopped measuring (``metrics.stop_reason``), as a reader asks it of a missed target.
STOP_REASONS = {"max_time": "its time budget ran out", "rounds": "the rounds ran out",
                "target_ci": "stopped at the target"}


def build(ctx: Context) -> list[Block]:
    blocks: list[Block] = []
    for i, run in enumerate(ctx.runs):
        rows = [r for r in ctx.rows if r.run_index == i]
        title = "Findings" if not ctx.multi_run else f"Findings: {run.label}" + (" (baseline)" if i == 0 else "")
        blocks.append(Bullets(title, run_findings(run, rows), cls="findings"))
    if ctx.multi_run:
        blocks.append(Note(f"The Comparison view sets each case of the other runs against the baseline run "
                           f"'{ctx.runs[0].label}'."))
    return blocks


def run_findings(run: Run, rows: Sequence[CaseRow]) -> list[str]:
    """The findings of one run, as sentences in the order a reader asks: how fast, what mattered,
    what to distrust, what is missing, and what the intervals rest on."""
    measured = [r for r in rows if r.case.ok]
    items = [extremes(measured)]
    items += [effect_finding(effects) for effects in _by_parameter(run.doc.effects).values()]
    items += [s for s in (unstable_finding(measured), target_finding(measured)) if s]
    items.append(status_finding(rows, run))
    items.append(basis_finding(run))
    return items


def case_figure(r: CaseRow) -> str:
    """``mlp-sgd at 4,012 samples/s (95% interval 3,950-4,080 over 8 trials)``."""
    thr = r.throughput
    assert thr is not None  # measured rows only
    ci = r.ci95
    interval = (f"95% interval {number(ci[0])}\u2013{number(ci[1])} {r.interval_short}" if ci
                else f"no interval, {r.interval_short}")
    return f"{r.id} at {number(thr[0])} samples/s ({interval})"


def extremes(measured: Sequence[CaseRow]) -> str:
    if not measured:
        return "No case was measured."
    if len(measured) == 1:
        return f"One case was measured: {case_figure(measured[0])}."
    ordered = sorted(measured, key=lambda r: r.throughput[0] if r.throughput else 0.0)
    slow, fast = ordered[0], ordered[-1]
    times = (fast.throughput[0] / slow.throughput[0]) if fast.throughput and slow.throughput else math.nan
    return f"Fastest: {case_figure(fast)}. Slowest: {case_figure(slow)}, {times:,.3g}x slower."


def _by_parameter(effects: Sequence[EffectRecord]) -> dict[str, list[EffectRecord]]:
    out: dict[str, list[EffectRecord]] = {}
    for e in effects:
        out.setdefault(e.parameter, []).append(e)
    return out


def effect_figure(e: EffectRecord) -> str:
    """``-12.3% (95% interval -14.0% to -10.5% over 8 rounds, 2 pairs)``; the ratio must be there."""
    assert e.ratio is not None and e.low is not None and e.high is not None
    point, low, high = effect_texts(e.ratio, e.low, e.high)
    return f"{point} (95% interval {low} to {high} over {e.rounds} rounds, {e.pairs} pair{'s' if e.pairs != 1 else ''})"


def no_figure_reason(e: EffectRecord) -> str:
    """Why an effect has no paired figure: its first missing cell, or too few common rounds."""
    if not e.missing:
        return f"fewer than 2 rounds in which a pair of cases both ran ({e.rounds} found)"
    more = len(e.missing) - 1
    return e.missing[0] + (f", and {more} more cell{'s' if more != 1 else ''} (see Effects)" if more else "")


def effect_finding(effects: Sequence[EffectRecord]) -> str:
    """The largest effect (in either direction) of one parameter, with its interval; values with
    no paired figure are counted, or said why when none has one."""
    parameter = effects[0].parameter
    paired = [e for e in effects if e.ratio is not None and e.low is not None and e.high is not None]
    if not paired:
        e = effects[0]
        values = ", ".join(x.value for x in effects)
        return f"{parameter} ({values} vs {e.baseline}): no paired figure: {no_figure_reason(e)}."
    largest = max(paired, key=lambda e: abs(math.log(e.ratio or 1.0)))
    assert largest.low is not None and largest.high is not None
    ratio = largest.ratio or 1.0
    times = f" {max(ratio, 1 / ratio):,.3g}x" if not 0.5 <= ratio <= 2 else ""
    plain = ("no clear change: the interval includes 0%" if largest.low <= 1 <= largest.high else
             f"{largest.value} is{times} {'faster' if largest.low > 1 else 'slower'}")
    text = (f"{parameter}: the largest effect is {largest.value} vs {largest.baseline}, "
            f"{effect_figure(largest)}: {plain}")
    unpaired = len(effects) - len(paired)
    if unpaired:
        text += f"; {unpaired} other value{'s have' if unpaired != 1 else ' has'} no paired figure"
    return text + "."


def _named(names: Sequence[str], total: int) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    return shown + (f" and {total - MAX_NAMED} more" if total > MAX_NAMED else "")


def unstable_finding(measured: Sequence[CaseRow]) -> str | None:
    """Cases with a trial whose throughput drifted beyond 10% inside itself: their intervals
    include that drift, and their medians may hide a warm-up or a throttled machine."""
    unstable = [r for r in measured if r.metrics is not None and r.metrics.unstable]
    if not unstable:
        return None
    described = []
    for r in unstable:
        drifting = [t for t in r.case.trials or [] if not t.stable]
        if drifting:
            worst = max(drifting, key=lambda t: abs(t.drift))
            described.append(f"{r.id} (by up to {worst.drift:+.1%}, round {worst.round})")
        else:
            described.append(r.id)
    n = len(unstable)
    return (f"Unstable: {n} case{'s' if n != 1 else ''} drifted by more than 10% within a trial: "
            f"{_named(described, n)}.")


def target_finding(measured: Sequence[CaseRow]) -> str | None:
    with_target = [r for r in measured if r.metrics is not None and r.metrics.throughput.ci_target_met is not None]
    if not with_target:
        return None
    missed = [r for r in with_target if r.metrics is not None and r.metrics.throughput.ci_target_met is False]
    if not missed:
        return f"Every measured case reached its interval target ({len(with_target)} cases)."

    def width(r: CaseRow) -> float:
        rel = r.metrics.throughput.ci_rel_half_width if r.metrics is not None else None
        return rel if rel is not None else math.inf

    described = []
    for r in sorted(missed, key=width, reverse=True):
        assert r.metrics is not None
        thr = r.metrics.throughput
        got = "no interval" if math.isinf(width(r)) else f"\u00b1{width(r):.1%}"
        asked = f" against \u00b1{thr.ci_target:.1%} asked" if thr.ci_target is not None else ""
        reason = r.metrics.stop_reason
        stop = f"; {STOP_REASONS.get(reason, f'stopped by {reason}')}" if reason else ""
        described.append(f"{r.id} ({got}{asked}{stop})")
    return (f"Missed the interval target: {len(missed)} of {len(with_target)} measured cases; the widest: "
            f"{_named(described, len(missed))}.")


def status_finding(rows: Sequence[CaseRow], run: Run) -> str:
    failed = sum(r.status == "failed" for r in rows)
    skipped = sum(r.status == "skipped" for r in rows)
    every = "The case was" if len(rows) == 1 else f"All {len(rows)} cases were"
    text = (f"{every} measured." if not failed and not skipped else
            f"{failed + skipped} of {len(rows)} cases were not measured: {failed} failed, {skipped} skipped "
            "(reasons under Failed and skipped cases).")
    if run.doc.run.status != "complete":
        text += f" The run is {run.doc.run.status}: cases it did not reach are missing."
    return text


def basis_finding(run: Run) -> str:
    rounds = run.doc.rounds
    if not run.doc.trial_based:
        return ("Results version 1: each case was measured in one stretch, so its interval is within-run "
                "precision only (not run to run), and there are no paired effects.")
    if rounds is None:
        return "Intervals are over each case's trials in randomized rounds."
    return (f"Measured in {rounds.completed} randomized round{'s' if rounds.completed != 1 else ''} "
            f"(order seed {rounds.seed}): {rounds.estimator}.")
