"""Terminal output with rich: a progress bar over cases while running, a results table after."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

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
        self.progress.update(self.task, description=f"[bold]{case.id}")

    def case_finished(self, case: Case, record: dict[str, Any]) -> None:
        self.progress.advance(self.task)
        if not self.enabled:
            return
        status = record["status"]
        line = f"[{_STYLE[status]}]{status:>7}[/] {case.id}"
        thr = (record.get("metrics") or {}).get("throughput")
        if thr:
            line += f"  {thr['median']:.1f} samples/s"
        if record.get("error"):
            line += f"  [dim]{record['error'][:160]}[/]"
        self.progress.console.print(line, markup=True, highlight=False, soft_wrap=True)


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def print_results(records: list[dict[str, Any]]) -> None:
    table = Table(title="results", show_lines=False)
    for col, justify in [("case", "left"), ("status", "left"), ("samples/s", "right"), ("95% CI", "right"),
                         ("step p50 ms", "right"), ("step p95 ms", "right"), ("peak RSS MiB", "right")]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in records:
        m = r.get("metrics") or {}
        thr = m.get("throughput") or {}
        ci = thr.get("ci95")
        rel = thr.get("ci_rel_half_width")
        ci_text = f"±{rel:.1%}" if isinstance(rel, float) and ci else "-"
        step = m.get("step_time_ms") or {}
        table.add_row(r["id"], f"[{_STYLE[r['status']]}]{r['status']}[/]", _num(thr.get("median"), ".1f"), ci_text,
                      _num(step.get("p50"), ".2f"), _num(step.get("p95"), ".2f"), _num(m.get("peak_rss_mb"), ".0f"))
    # Not a terminal (CI logs, pipes): rich would wrap at 80 columns; case ids deserve more.
    out = Console()
    if not out.is_terminal:
        out = Console(width=160)
    out.print(table)
