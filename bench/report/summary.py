"""The Summary view: the findings first, then what ran where, every case in one sortable and
filterable table, and what went wrong (failed and skipped cases, collectors that recorded an error)."""

from __future__ import annotations

from typing import Any

from bench.labels import fmt_value
from bench.report import findings
from bench.report.model import (
    Block,
    Cell,
    Column,
    Context,
    Note,
    Section,
    Table,
    View,
    as_float,
    interval_caption,
    num,
    si,
    varying_axes,
)


def build(ctx: Context) -> View:
    view = View("summary", "Summary", "What the results say, the run metadata, the environment each run "
                "measured on, and every case.")
    view.blocks.extend(findings.build(ctx))
    view.blocks.append(_runs_table(ctx))
    view.blocks.append(_environment_table(ctx))
    shared = _shared_parameters(ctx)
    if shared is not None:
        view.blocks.append(shared)
    view.blocks.extend(_results_table(ctx))
    problems = _problem_table(ctx)
    if problems is not None:
        view.blocks.append(problems)
    collector_errors = _collector_error_table(ctx)
    if collector_errors is not None:
        view.blocks.append(collector_errors)
    return view


def _runs_table(ctx: Context) -> Table:
    rows = []
    for run in ctx.runs:
        meta = run.doc.run
        statuses = [c.status for c in run.cases]
        counts = ", ".join(f"{statuses.count(s)} {s}" for s in ("ok", "failed", "skipped") if s in statuses)
        rows.append([
            Cell(run.label), Cell(run.doc.suite.name), Cell(run.doc.suite.path),
            Cell(meta.started), Cell(meta.finished or ""),
            Cell(meta.status, cls=f"status-{meta.status}"),
            Cell(f"{len(run.cases)} ({counts})" if counts else "0", sort=float(len(run.cases))),
            Cell(" ".join(meta.argv), cls="notes"),
        ])
    columns = [Column("run"), Column("suite"), Column("suite file"), Column("started (UTC)"),
               Column("finished (UTC)"), Column("status"), Column("cases", numeric=True), Column("command")]
    return Table(ctx.new_id("table"), columns, rows, caption="Runs")


def _env_value(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if key == "git" and isinstance(value, dict):
        commit = str(value.get("commit") or "")[:12]
        return f"{commit} ({'dirty' if value.get('dirty') else 'clean'})"
    if key == "gpus" and isinstance(value, list):
        if not value:
            return "none"
        names = [str(g.get("name", g)) if isinstance(g, dict) else str(g) for g in value]
        return ", ".join(f"{names.count(n)} x {n}" for n in dict.fromkeys(names))
    if isinstance(value, float):
        return f"{value:g}"
    return fmt_value(value)


def _environment_table(ctx: Context) -> Section:
    envs = [run.environment.model_dump(mode="json") for run in ctx.runs]
    keys: list[str] = []
    for env in envs:
        keys.extend(k for k in env if k not in keys)
    rows = []
    differing = 0
    for key in keys:
        values = [_env_value(key, env.get(key)) for env in envs]
        # Where runs differ (another machine, library, commit) the comparison may not be like for like.
        cls = "differs" if len(set(values)) > 1 and key not in ("time", "hostname") else ""
        differing += bool(cls)
        rows.append([Cell(key)] + [Cell(v, cls=cls) for v in values])
    columns = [Column("property")] + [Column(run.label) for run in ctx.runs]
    # Folded: a reader looks it up, rarely reads it first; the title says whether runs differ.
    title = "Environment fingerprint"
    if ctx.multi_run:
        title += f" ({differing} propert{'ies differ' if differing != 1 else 'y differs'} between runs, highlighted)"
    return Section(title, [Table(ctx.new_id("table"), columns, rows)], open=False)


def _shared_parameters(ctx: Context) -> Section | None:
    if not ctx.rows:
        return None
    varying = set(varying_axes(ctx.rows))
    first = ctx.rows[0]
    rows = [[Cell(k), Cell(fmt_value(first.params.get(k)))] for k in first.labels if k not in varying]
    if not rows:
        return None
    table = Table(ctx.new_id("table"), [Column("parameter"), Column("value")], rows)
    return Section("Parameters shared by every case", [table], open=False)


def _results_table(ctx: Context) -> list[Block]:
    if not ctx.rows:
        return [Note("No cases in these results.", cls="empty")]
    axes = varying_axes(ctx.rows)
    trial_based = [r.trial_based for r in ctx.rows]
    has_trials = any(trial_based)
    median_help = ("median of the trial medians" if all(trial_based) else
                   "median over the windows of one stretch" if not has_trials else
                   "version 2: median of the trial medians; version 1: median over the windows of one stretch")
    has_cuda = any(r.metrics is not None and r.metrics.cuda_peak_allocated_mb is not None for r in ctx.rows)
    has_flops = any(r.collector("flops") for r in ctx.rows)
    has_compile = any(r.metrics is not None and r.metrics.compile_s is not None for r in ctx.rows)
    columns = ([Column("run")] if ctx.multi_run else []) + [Column("case"), Column("status")]
    columns += [Column(a) for a in axes]
    intervals = interval_caption(ctx.rows, ctx.multi_run)
    columns += [Column("throughput (samples/s)", True, median_help),
                Column("95% CI (samples/s)", True, intervals),
                Column("± CI (%)", True, "half-width of the 95% CI relative to the median"),
                Column("step p50 (ms)", True), Column("step p95 (ms)", True),
                Column("peak RSS (MiB)", True, "peak resident memory of the case process")]
    if has_cuda:
        columns.append(Column("CUDA peak (MiB)", True, "torch.cuda.max_memory_allocated"))
    if has_compile:
        columns += [Column("compile (s)", True, "torch.compile: the first step, compilation included, before the "
                                                "warm-up and outside every trial"),
                    Column("graph breaks", True, "where torch exposes the count")]
    if has_flops:
        columns += [Column("FLOPs per sample", True, "forward and backward"), Column("achieved (FLOP/s)", True),
                    Column("MFU (%)", True, "model FLOPs utilisation: achieved over the device's peak")]
    # The trial is the unit of a version-2 estimate; its windows matter only to version 1.
    has_windows = not all(trial_based)
    if has_trials:
        columns.append(Column("trials", True, "short trials in randomized rounds the estimate rests on"))
    if has_windows:
        columns.append(Column("windows", True, "timed windows of the one stretch"))
    columns.append(Column("notes"))
    rows = []
    for r in ctx.rows:
        m = r.metrics
        thr = r.throughput
        cells = [Cell(r.run)] if ctx.multi_run else []
        cells += [Cell(r.id), Cell(r.status, cls=f"status-{r.status}")]
        cells += [Cell(r.labels[a]) for a in axes]
        cells.append(num(thr[0] if thr else None))
        ci = r.ci95
        cells.append(Cell(f"{ci[0]:,.1f} \u2013 {ci[1]:,.1f}", sort=ci[0]) if ci else Cell(""))
        rel = m.throughput.ci_rel_half_width if m is not None else None
        cells.append(num(rel * 100 if rel is not None else None))
        cells += ([num(m.step_time_ms.p50, 2), num(m.step_time_ms.p95, 2), num(m.peak_rss_mb, 0)] if m is not None
                  else [Cell(""), Cell(""), Cell("")])
        if has_cuda:
            cells.append(num(m.cuda_peak_allocated_mb if m is not None else None, 0))
        if has_compile:
            cells += [num(m.compile_s if m is not None else None, 2),
                      num(m.graph_breaks if m is not None else None, 0)]
        if has_flops:
            flops = r.collector("flops")
            per_sample, achieved, mfu = (as_float(getattr(flops, k, None)) for k in
                                          ("flops_per_sample", "achieved_flops", "mfu"))
            cells += [Cell(si(per_sample, "FLOP"), sort=per_sample) if per_sample is not None else Cell(""),
                      Cell(si(achieved, "FLOP/s"), sort=achieved) if achieved is not None else Cell(""),
                      num(mfu * 100 if mfu is not None else None, 2)]
        if has_trials:
            cells.append(num(r.trial_count if m is not None and r.trial_based else None, 0))
        if has_windows:
            cells.append(num(m.windows if m is not None and not r.trial_based else None, 0))
        notes = ([r.case.error] if r.case.error else []) + r.case.warnings
        cells.append(Cell("; ".join(notes), cls="notes"))
        rows.append(cells)
    table = Table("results", columns, rows, filterable=True,
                  caption="Results: click a column to sort, type to filter (every word must match)")
    return [table, Note(intervals, cls="intervals")] if intervals else [table]


def _problem_table(ctx: Context) -> Table | None:
    bad = [r for r in ctx.rows if r.status != "ok"]
    if not bad:
        return None
    rows = []
    for r in bad:
        log = r.case.log
        if log:
            href, exists = ctx.link(r.results_dir, log)
            log_cell = Cell(log, href=href, cls="" if exists else "missing",
                            title="" if exists else "file not found when the report was built")
        else:
            log_cell = Cell("")
        rows.append(([Cell(r.run)] if ctx.multi_run else []) + [
            Cell(r.id), Cell(r.status, cls=f"status-{r.status}"),
            Cell(r.case.error or "(no reason recorded)", cls="notes", detail=r.case.traceback or None),
            log_cell])
    columns = ([Column("run")] if ctx.multi_run else []) + [Column("case"), Column("status"),
                                                             Column("reason"), Column("log")]
    return Table(ctx.new_id("table"), columns, rows, caption=f"Failed and skipped cases ({len(bad)})")


def _collector_error_table(ctx: Context) -> Table | None:
    """Collector errors grouped by message: "NVML unavailable" on a CPU machine is one line, not
    one per case."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in ctx.rows:
        for name, record in r.case.collectors.items():
            error = record.get("error") if isinstance(record, dict) else record.error
            if error:
                groups.setdefault((name, str(error)), []).append(
                    f"{r.run} · {r.id}" if ctx.multi_run else r.id)
    if not groups:
        return None
    rows = [[Cell(name), Cell(error, cls="notes"), num(len(cases), 0),
             Cell(", ".join(cases[:5]) + (f" and {len(cases) - 5} more" if len(cases) > 5 else ""), cls="notes")]
            for (name, error), cases in groups.items()]
    columns = [Column("collector"), Column("error"), Column("cases", True), Column("in")]
    return Table(ctx.new_id("table"), columns, rows, caption="Collectors that recorded an error")
