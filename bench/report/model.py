"""What a report page is made of, and the per-case facts every view reads.

Views build plain data (``View`` holding blocks: figures, tables, notes, sections, switchers); the
template turns it into HTML with autoescaping. Nothing here writes markup, so no string from a
results file can become HTML."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import quote

from bench.labels import axis_labels
from bench.records import CaseRecord, CollectorRecord, Metrics, Samples
from bench.results import Run

# ---------------------------------------------------------------------------------------------
# Page blocks


def sort_text(value: float | str) -> str:
    """A sort key as short text: six significant digits order any table we show."""
    return f"{value:.6g}" if isinstance(value, float) else value


@dataclass
class Cell:
    """One table cell: ``text`` is shown (escaped), ``sort`` orders the column (numbers numerically),
    ``href`` makes it a link, ``detail`` adds a collapsible preformatted block (a traceback)."""

    text: str
    sort: float | str | None = None
    cls: str = ""
    title: str = ""
    href: str | None = None
    detail: str | None = None


@dataclass
class Column:
    title: str
    numeric: bool = False
    help: str = ""


@dataclass
class Table:
    id: str
    columns: list[Column]
    rows: list[list[Cell]]
    caption: str = ""
    filterable: bool = False
    kind: Literal["table"] = "table"


@dataclass
class FigureBlock:
    """A plotly figure as JSON that is safe inside a ``<script>`` element (no ``<``, ``>``, ``&``)."""

    id: str
    spec: str
    height: int
    caption: str = ""
    kind: Literal["figure"] = "figure"


@dataclass
class Switcher:
    """Several figures of the same kind (one per case) shown one at a time, picked from a list: a
    page of 1,000 cases stays light, and a hidden plot is never drawn at the wrong size."""

    id: str
    label: str
    options: list[str]
    spec: str  # JSON {"layout": shared, "figures": [{"data", "layout": overrides}]}, safe inside <script>
    height: int
    caption: str = ""
    kind: Literal["switcher"] = "switcher"


@dataclass
class Note:
    text: str
    cls: str = ""
    kind: Literal["note"] = "note"


@dataclass
class Bullets:
    """A short list of sentences (findings, cells without a counterpart), read before any table."""

    title: str
    items: list[str]
    cls: str = ""
    kind: Literal["bullets"] = "bullets"


@dataclass
class Section:
    """A collapsible group of blocks (``<details>``)."""

    title: str
    blocks: list[Block]
    open: bool = False
    kind: Literal["section"] = "section"


Block = Table | FigureBlock | Switcher | Note | Bullets | Section


@dataclass
class View:
    key: str
    title: str
    intro: str
    blocks: list[Block] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Comparisons from the statistics module, read by attribute only (bench.compare is wired by the caller)


class ComparisonRowLike(Protocol):
    """One metric of one case, as ``bench.compare.MetricComparison`` has it (read-only here)."""

    @property
    def case_id(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def base(self) -> float | None: ...
    @property
    def new(self) -> float | None: ...
    @property
    def change(self) -> float | None: ...
    @property
    def ci95(self) -> tuple[float, float] | None: ...
    @property
    def p_value(self) -> float | None: ...
    @property
    def verdict(self) -> str: ...
    @property
    def message(self) -> str: ...


class ComparisonLike(Protocol):
    """A comparison of one run against the baseline; ``new_label``, where present, names the run."""

    @property
    def rows(self) -> Sequence[ComparisonRowLike]: ...


# ---------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class CaseRow:
    """One case of one run, with a short label for each of its parameters."""

    run: str
    run_index: int
    results_dir: Path
    case: CaseRecord
    labels: dict[str, str]
    trial_based: bool = False
    """Whether its interval is over trials in randomized rounds (results version 2), not over the
    windows of one stretch (version 1)."""

    @property
    def id(self) -> str:
        return self.case.id

    @property
    def status(self) -> str:
        return self.case.status

    @property
    def params(self) -> dict[str, Any]:
        return self.case.params.as_dict()

    @property
    def metrics(self) -> Metrics | None:
        return self.case.metrics

    @property
    def samples(self) -> Samples | None:
        return self.case.samples

    def collector(self, name: str) -> CollectorRecord | None:
        """The collector's record, or None where it is missing or recorded an error."""
        record = self.case.collectors.get(name)
        if record is None or isinstance(record, dict) or record.error:
            return None
        return record

    @property
    def throughput(self) -> tuple[float, float, float] | None:
        """Median and 95% CI bounds (both the median where too few windows gave no interval), or
        None for a case without measurements."""
        if self.metrics is None:
            return None
        median = self.metrics.throughput.median
        ci = self.ci95
        return (median, *ci) if ci else (median, median, median)

    @property
    def ci95(self) -> tuple[float, float] | None:
        if self.metrics is None:
            return None
        low, high = self.metrics.throughput.ci95
        return (low, high) if low is not None and high is not None else None

    @property
    def trial_count(self) -> int:
        """Trials the case's estimate rests on (a version-1 case is one stretch: one trial)."""
        if self.metrics is not None and self.metrics.throughput.trials is not None:
            return self.metrics.throughput.trials
        return len(self.case.trials or [])

    @property
    def interval_short(self) -> str:
        """What the case's interval covers, in a few words for a sentence: ``over 8 trials`` (in
        randomized rounds), or ``within one stretch`` (results version 1)."""
        if not self.trial_based:
            return "within one stretch"
        n = self.trial_count
        return f"over {n} trial{'s' if n != 1 else ''}"


@dataclass
class Context:
    """Everything a view builder may read: the runs, their cases, where the page is written, and
    the comparisons (if the caller computed them)."""

    runs: list[Run]
    rows: list[CaseRow]
    html_dir: Path | None
    comparisons: list[ComparisonLike] | None
    _ids: Iterator[int] = field(default_factory=count)

    @property
    def multi_run(self) -> bool:
        return len(self.runs) > 1

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def link(self, results_dir: Path, relative: str) -> tuple[str, bool]:
        """A URL for a file named relative to a results folder, relative to the page's folder,
        with every segment percent-encoded so that a name like ``javascript:x`` stays a path.
        Returns the URL and whether the file exists now."""
        target = results_dir / relative
        base = self.html_dir if self.html_dir is not None else results_dir
        try:
            rel = os.path.relpath(target, base)
        except ValueError:  # another drive on Windows
            rel = str(target)
        url = "/".join(quote(part) for part in Path(rel).as_posix().split("/"))
        return url, target.exists()


ViewBuilder = Callable[[Context], "View | None"]


def case_rows(runs: list[Run]) -> list[CaseRow]:
    cases = [(i, run, case) for i, run in enumerate(runs) for case in run.cases]
    params = [case.params.as_dict() for _, _, case in cases]
    keys: list[str] = []
    for p in params:
        keys.extend(k for k in p if k not in keys)
    labels_by_key = {k: axis_labels([p.get(k) for p in params]) for k in keys}
    return [CaseRow(run=run.label, run_index=i, results_dir=run.path.parent, case=case,
                    labels={k: labels_by_key[k][n] for k in keys}, trial_based=run.doc.trial_based)
            for n, (i, run, case) in enumerate(cases)]


def interval_caption(rows: Sequence[CaseRow], multi_run: bool) -> str:
    """What the intervals of these cases cover, said once for a table or a chart: per run where
    runs differ (a version-1 file next to a version-2 one)."""
    by_run: dict[str, list[CaseRow]] = {}
    for r in rows:
        if r.metrics is not None:
            by_run.setdefault(r.run, []).append(r)
    parts = []
    for run, mine in by_run.items():
        methods: dict[str, int] = {}
        for r in mine:
            how = r.metrics.throughput.interval if r.metrics is not None else None
            if how:
                methods[how] = methods.get(how, 0) + 1
        if mine[0].trial_based:
            counts = sorted({r.trial_count for r in mine})
            n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
            text = f"95% intervals over each case's trials in randomized rounds ({n} trials per case)"
            if len(methods) == 1:
                text += f": {next(iter(methods))}"
            elif methods:
                text += ": " + "; or ".join(f"{m} ({k} cases)" for m, k in methods.items())
        else:
            text = f"95% intervals from {next(iter(methods), 'the windows of one stretch')}"
        parts.append(f"{run}: {text}" if multi_run else text)
    return "Intervals: " + "; ".join(parts) + "." if parts else ""


def varying_axes(rows: Sequence[CaseRow]) -> list[str]:
    """Parameters whose label differs between cases, in the order the results file lists them."""
    if not rows:
        return []
    keys = list(rows[0].labels)
    return [k for k in keys if len({r.labels.get(k) for r in rows}) > 1]


def axis_order(rows: Sequence[CaseRow], axis: str) -> list[str]:
    """The distinct labels of one parameter: numbers in numeric order, anything else as first seen."""
    seen: dict[str, Any] = {}
    for r in rows:
        seen.setdefault(r.labels[axis], r.params.get(axis))
    values = list(seen.values())
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sorted(seen, key=lambda label: seen[label])
    return list(seen)


# ---------------------------------------------------------------------------------------------
# Labels and numbers


def as_float(value: Any) -> float | None:
    """A number from a results file, or None for anything else (missing, null, text, a bool)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def num(value: Any, digits: int = 1) -> Cell:
    """A numeric cell: formatted text, the value to sort by, blank when missing. (A cell with a
    numeric sort value is right-aligned by the page's style sheet.)"""
    number = as_float(value)
    if number is None:
        return Cell("")
    return Cell(f"{number:,.{digits}f}", sort=number)


def number(value: float) -> str:
    """Throughput in a sentence or a title: a thousand separator, no false precision."""
    return f"{value:,.0f}" if value >= 100 else f"{value:,.3g}"


def si(value: float, unit: str) -> str:
    """1.23e12, 'FLOP/s' -> '1.23 TFLOP/s'."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def percent(change: float | None, digits: int = 1) -> str:
    if change is None or not math.isfinite(change):
        return ""
    return f"{change * 100:+.{digits}f}%"
