"""Terminal output with rich: a progress bar over cases while running, a results table after."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from bench.records import CaseRecord, EffectRecord
from bench.suite import Case, Suite

_err = Console(stderr=True)
_STYLE = {"ok": "green", "failed": "bold red", "skipped": "yellow"}


class ProgressObserver:
    """Shows a progress bar on stderr (elapsed time and ETA) and one line per finished case."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=_err, disable=not (enabled and _err.is_terminal), transient=True)
        self.task: Any = None

    def __enter__(self) -> ProgressObserver:
        self.progress.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def suite_started(self, suite: Suite, out_dir: Path) -> None:
        self.task = self.progress.add_task(f"suite {suite.name}", total=len(suite.cases))
        if self.enabled:
            self.progress.console.print(f"running {len(suite.cases)} case(s) of {suite.name!r} into {out_dir}")
            for case in suite.cases:
                if case.note:
                    self.progress.console.print(f"note: {case.id}: {case.note}", markup=False, highlight=False)

    def case_started(self, case: Case) -> None:
        self.progress.update(self.task, description=f"[bold]{escape(case.id)}[/] starting")

    def trial_finished(self, case: Case, trials: int) -> None:
        self.progress.update(self.task, description=f"[bold]{escape(case.id)}[/] trial {trials}")

    def case_finished(self, case: Case, record: CaseRecord) -> None:
        self.progress.advance(self.task)
        if not self.enabled:
            return
        status = record.status
        line = f"[{_STYLE[status]}]{status:>7}[/] {case.id}"
        if record.throughput is not None:
            line += f"  {record.throughput:.1f} samples/s"
        if record.error:
            line += f"  [dim]{escape(record.error[:160])}[/]"
        self.progress.console.print(line, markup=True, highlight=False, soft_wrap=True)


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def print_results(records: list[CaseRecord]) -> None:
    table = Table(title="results", show_lines=False)
    # Compile time is its own column, apart from step time, where some case was compiled.
    compiled = any(r.metrics is not None and r.metrics.compile_s is not None for r in records)
    columns = [("case", "left"), ("status", "left"), ("samples/s", "right"), ("95% CI", "right"),
               ("step p50 ms", "right"), ("step p95 ms", "right"), ("peak RSS MiB", "right")]
    if compiled:
        columns.append(("compile s", "right"))
    for col, justify in columns:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in records:
        m = r.metrics
        status = f"[{_STYLE[r.status]}]{r.status}[/]"
        if m is None:
            table.add_row(escape(r.id), status, *["-"] * (len(columns) - 2))
            continue
        rel = m.throughput.ci_rel_half_width
        ci_text = f"±{rel:.1%}" if rel is not None else "-"
        row = [escape(r.id), status, _num(m.throughput.median, ".1f"), ci_text,
               _num(m.step_time_ms.p50, ".2f"), _num(m.step_time_ms.p95, ".2f"), _num(m.peak_rss_mb, ".0f")]
        if compiled:
            row.append(_num(m.compile_s, ".2f"))
        table.add_row(*row)
    # Not a terminal (CI logs, pipes): rich would wrap at 80 columns; case ids deserve more.
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)
    out.print(table)
    for line in anatomy_lines(records):
        out.print(line, markup=False, highlight=False, soft_wrap=True)


def anatomy_lines(records: list[CaseRecord]) -> list[str]:
    """Where each case's step time and memory go, one line per case that recorded them (the
    report's Anatomy view has the detail)."""
    # Imported here: the report package is not needed to run a suite, only to summarise one.
    from bench.report.anatomy import one_line

    return [f"{r.id}  {line}" for r in records
            if (line := one_line(r.collectors.anatomy, r.collectors.memory_breakdown)) is not None]


def print_effects(effects: list[EffectRecord]) -> None:
    """Each swept parameter's paired effect against its baseline value, with its interval."""
    if not effects:
        return
    table = Table(title="effects (each value against the first, other parameters equal, paired within rounds)")
    for col, justify in [("parameter", "left"), ("value", "left"), ("baseline", "left"), ("change", "right"),
                         ("95% CI", "right"), ("rounds", "right"), ("pairs", "right")]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    notes = []
    for e in effects:
        if e.ratio is None or e.low is None or e.high is None:
            table.add_row(escape(e.parameter), escape(e.value), escape(e.baseline), "-", "-", "0", str(e.pairs))
        else:
            table.add_row(escape(e.parameter), escape(e.value), escape(e.baseline), f"{(e.ratio - 1) * 100:+.1f}%",
                          f"{(e.low - 1) * 100:+.1f}% to {(e.high - 1) * 100:+.1f}%", str(e.rounds), str(e.pairs))
        if e.missing:
            # A case added by an include has no counterpart in most cells: name two, count the rest.
            shown = "; ".join(e.missing[:2]) + (f"; and {len(e.missing) - 2} more" if len(e.missing) > 2 else "")
            head = f"{e.parameter}: {e.value} vs {e.baseline}: no paired figure" if e.ratio is None else \
                f"{e.parameter}={e.value}: unpaired cells"
            notes.append(f"{head} ({shown})")
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)
    out.print(table)
    for note in notes:
        out.print(escape(note), style="yellow", highlight=False, soft_wrap=True)


class ABObserver:
    """``bench ab``'s progress on stderr: a line when a case starts and now and then while its
    pairs run (with the interval so far), and its verdict when it ends."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def case_started(self, case: Case, index: int, total: int) -> None:
        if self.enabled:
            _err.print(f"[{index + 1}/{total}] {escape(case.id)}: starting both sides", highlight=False)

    def pair_finished(self, case: Case, stage: str, n: int, stats: Any) -> None:
        if self.enabled and stats is not None:
            _err.print(f"    {stage}: {stats.describe()}", highlight=False, markup=False)

    def case_finished(self, case: Case, record: Any) -> None:
        if self.enabled:
            style = _AB_STYLE.get(record.verdict, "")
            _err.print(f"[{style}]{record.verdict:>12}[/] {escape(case.id)}: {escape(record.message)}",
                       highlight=False, soft_wrap=True)


_AB_STYLE = {"regression": "bold red", "improvement": "green", "unchanged": "green", "inconclusive": "yellow",
             "failed": "bold red", "skipped": "yellow"}


def print_ab(doc: Any) -> None:
    """The verdicts of an A/B run as a table on stdout."""
    from bench.report.ab import headline

    s = doc.settings
    table = Table(title=f"{doc.kind}: {headline(doc)} (threshold ±{s.threshold:.1%}, {s.confidence:.0%} intervals)")
    for col, justify in [("case", "left"), ("verdict", "left"), ("change new/base", "right"), ("interval", "right"),
                         ("launches", "right"), ("pairs", "right"), ("adj. p", "right")]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in doc.cases:
        change = "-" if c.ratio is None else f"{(c.ratio - 1) * 100:+.1f}%"
        interval = "-" if c.low is None or c.high is None else \
            f"{(c.low - 1) * 100:+.1f}% to {(c.high - 1) * 100:+.1f}%"
        table.add_row(escape(c.id), f"[{_AB_STYLE.get(c.verdict, '')}]{c.verdict}[/]", change, interval,
                      str(c.launches), str(c.pairs), "-" if c.p_adjusted is None else f"{c.p_adjusted:.2g}")
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)
    out.print(table)
