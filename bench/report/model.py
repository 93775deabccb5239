"""What a report page is made of, and the per-case facts every view reads.

Views build plain data (``View`` holding blocks: figures, tables, notes, sections, switchers); the
template turns it into HTML with autoescaping. Nothing here writes markup, so no string from a
results file can become HTML."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import quote

from bench import ids
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
class Section:
    """A collapsible group of blocks (``<details>``)."""

    title: str
    blocks: list[Block]
    open: bool = False
    kind: Literal["section"] = "section"


Block = Table | FigureBlock | Switcher | Note | Section


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
    case: dict[str, Any]
    labels: dict[str, str]

    @property
    def id(self) -> str:
        case_id: str = self.case["id"]
        return case_id

    @property
    def status(self) -> str:
        status: str = self.case["status"]
        return status

    @property
    def metrics(self) -> dict[str, Any]:
        return self.case.get("metrics") or {}

    @property
    def samples(self) -> dict[str, Any]:
        return self.case.get("samples") or {}

    def collector(self, name: str) -> dict[str, Any] | None:
        """The collector's record, or None where it is missing or recorded an error."""
        record = (self.case.get("collectors") or {}).get(name)
        if not isinstance(record, dict) or record.get("error"):
            return None
        return record

    @property
    def throughput(self) -> tuple[float, float, float] | None:
        """Median and 95% CI bounds (both the median where too few windows gave no interval), or
        None for a case without measurements."""
        thr = self.metrics.get("throughput") or {}
        median = as_float(thr.get("median"))
        if median is None:
            return None
        ci = self.ci95
        return (median, *ci) if ci else (median, median, median)

    @property
    def ci95(self) -> tuple[float, float] | None:
        ci = (self.metrics.get("throughput") or {}).get("ci95") or []
        low, high = (as_float(v) for v in ci) if len(ci) == 2 else (None, None)
        return (low, high) if low is not None and high is not None else None


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
    keys: list[str] = []
    for _, _, case in cases:
        keys.extend(k for k in case["params"] if k not in keys)
    labels_by_key = {k: axis_labels([case["params"].get(k) for _, _, case in cases]) for k in keys}
    return [CaseRow(run=run.label, run_index=i, results_dir=run.path.parent, case=case,
                    labels={k: labels_by_key[k][n] for k in keys})
            for n, (i, run, case) in enumerate(cases)]


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
        seen.setdefault(r.labels[axis], r.case["params"].get(axis))
    values = list(seen.values())
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sorted(seen, key=lambda label: seen[label])
    return list(seen)


# ---------------------------------------------------------------------------------------------
# Labels and numbers


def fmt_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={fmt_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def axis_labels(values: list[Any]) -> list[str]:
    """Short labels for one parameter across cases. A configuration object (model, optimizer,
    data) is named by its ``label`` where the suite gives one, else as case ids name it (by the
    rule of ``bench.ids``): its ``name`` (or ``import``) and only the options that differ between
    values of that name, so ``{name: sgd, kwargs: {momentum: 0.9}}`` reads ``sgd momentum=0.9``
    next to plain ``sgd``."""
    unique: dict[str, Any] = {}
    for v in values:
        unique.setdefault(_canonical(v), v)
    if not all(isinstance(v, dict) for v in unique.values()):
        by_key = {c: fmt_value(v) for c, v in unique.items()}
    else:
        texts = ids.mapping_labels([_id_parts(obj) for obj in unique.values()], tidy=str)
        by_key = {c: text or "default" for c, text in zip(unique, texts, strict=True)}
    return [by_key[_canonical(v)] for v in values]


def _id_parts(obj: dict[str, Any]) -> ids.IdParts:
    """A configuration as a results file stores it, with its ``kwargs`` as options of their own."""
    head = str(obj.get("name") or obj.get("import") or "")
    facets: list[ids.Facet] = []
    for key, value in obj.items():
        if key in ("name", "import", "label"):
            continue
        options = value.items() if key == "kwargs" and isinstance(value, dict) else [(key, value)]
        facets.extend(ids.facet(k, v, f"{k}={fmt_value(v)}", " ") for k, v in options if v not in (None, {}, []))
    label = obj.get("label")
    return ids.IdParts(head, head, tuple(facets), str(label) if label else None)


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
