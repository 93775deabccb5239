"""Command line: parse arguments, call one library function per command, and turn typed errors
into one line on stderr and a documented exit code. Heavy libraries are imported inside the
commands that need them, so `bench --help`, `validate` and `list` start fast."""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError, UsageError

if TYPE_CHECKING:
    from bench.suite import Suite

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse prints usage + message; keep it to one line
        sys.stderr.write(f"bench: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def _set_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter in every case, e.g. --set batch_size=32 --set measure.max_time=2")


def _suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="suite YAML file")
    _set_arg(p)


def _plotlyjs_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--link-plotlyjs", action="store_true",
                   help="load plotly.js from its CDN instead of inlining it (smaller file, needs a network)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bench", description="Benchmark and profile PyTorch training from YAML suites.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("run", help="run every case of a suite and write results.json and report.html",
                       description="Run every case of a suite, each in its own process, in randomized rounds of "
                                   "short trials (every round gives each case one trial, in a fresh random order).")
    p.add_argument("suite", nargs="?", help="suite YAML file (with --resume: defaults to the interrupted run's)")
    _set_arg(p)
    target = p.add_mutually_exclusive_group()
    target.add_argument("--out", type=Path, help="output folder (default: a new folder under reports/)")
    target.add_argument("--resume", type=Path, metavar="DIR",
                        help="continue an interrupted run in DIR: cases already finished there are not run again")
    p.add_argument("--only", metavar="PATTERN", help="run only cases whose id matches this glob (or contains it)")
    p.add_argument("--no-report", action="store_true", help="write results.json only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--order-seed", type=int, metavar="N",
                   help="seed of the rounds' random order (default: a fresh one; either way it is recorded)")
    p.add_argument("--no-reference", action="store_true",
                   help="do not measure the machine-speed reference in every round (no relative throughput)")
    multi = p.add_argument_group("multi-node (ddp cases; passed to torch.distributed.run's c10d rendezvous)")
    multi.add_argument("--nnodes", type=int, default=1, help="number of nodes (default 1)")
    multi.add_argument("--node-rank", type=int, default=0, help="this node's rank; only node 0 writes results")
    multi.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="rendezvous endpoint served by node 0")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a suite without running it",
                       description="Validate a suite file and report how many cases it expands to.")
    _suite_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("list", help="list a suite's case ids, or the available components",
                       description="Print the expanded case ids of a suite (nothing is run), or with "
                                   "--components the names of every model, optimizer, activation, loss and transform.")
    p.add_argument("suite", nargs="?", help="suite YAML file")
    _set_arg(p)
    p.add_argument("--only", metavar="PATTERN", help="list only cases whose id matches")
    p.add_argument("--components", action="store_true", help="list the registered building blocks")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("report", help="write an HTML report from one or more results files",
                       description="Build one self-contained HTML page from results files or folders.")
    p.add_argument("results", nargs="+", type=Path, help="results.json files or folders holding one")
    p.add_argument("--out", type=Path, required=True, help="HTML file to write")
    _plotlyjs_arg(p)
    p.add_argument("--label", dest="labels", action="append", default=[], metavar="NAME",
                   help="name of a run in the report, once per results file in order (default: its folder name); "
                        "the first run is the baseline of the comparison")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="compare two runs; exit 1 on a regression (for CI)",
                       description="Compare two results files case by case: ratio of medians with a 95% bootstrap "
                                   "CI, Mann-Whitney U corrected for many cases, and a verdict per rule. "
                                   "Exit 0: no regression, 1: regression, 2: bad input or --strict-env mismatch.")
    p.add_argument("base", type=Path, help="baseline results.json (or a folder holding one)")
    p.add_argument("new", type=Path, help="new results.json (or a folder holding one)")
    p.add_argument("--fail-on", dest="fail_on", action="append", default=[], metavar="METRIC:±N%",
                   help="fail when METRIC changes by N%% or more that way, e.g. throughput:-5%% (the default) "
                        "or peak_rss_mb:+10%%; repeatable; replaces the default for the same metric")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level after correction (default 0.05)")
    p.add_argument("--correction", choices=["bh", "holm", "none"], default="bh",
                   help="correction for testing many cases: Benjamini-Hochberg (default), Holm, or none")
    p.add_argument("--min-samples", type=int, default=5,
                   help="fewer raw samples than this on either side gives 'inconclusive' (default 5)")
    p.add_argument("--strict-env", action="store_true",
                   help="exit 2 when the environments' fingerprints differ (default: warn)")
    p.add_argument("--calibration", type=Path, metavar="FILE",
                   help="noise floor from `bench aa --save FILE` (default: estimated from the runs' own trials)")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="write a Markdown summary (CI step summary, PR comment)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write every verdict as JSON")
    p.add_argument("--html", type=Path, metavar="FILE", help="write the HTML report with the comparison view")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("ab", help="measure two versions of your code in alternation; exit 1 on a confirmed regression",
                       description="Run every case of a suite on two sides (a directory, or a git revision of the "
                                   "repository bench runs in), in pairs of short measurements back to back, so "
                                   "the machine's drift cancels within each pair. Each case ends unchanged, "
                                   "regression, improvement (confirmed by fresh pairs) or inconclusive. "
                                   "Exit 0: no regression, 1: a confirmed regression or a case the new side "
                                   "broke, 2: bad input (nothing run).")
    _suite_args(p)
    p.add_argument("--base", required=True, metavar="SIDE", help="the baseline: a directory or a git revision")
    p.add_argument("--new", required=True, metavar="SIDE", help="the code under test: a directory or a git revision")
    _ab_args(p)
    p.set_defaults(func=cmd_ab, kind="ab")

    p = sub.add_parser("aa", help="calibrate: the same code on both sides (false alarms and noise floor)",
                       description="bench ab with the same side twice: how often this machine would flag a "
                                   "change that is not there, and how large a change it can resolve. With "
                                   "--save, the noise floor is kept for `bench compare --calibration`.")
    _suite_args(p)
    p.add_argument("--side", default=".", metavar="SIDE", help="the code on both sides (default: this directory)")
    p.add_argument("--save", type=Path, metavar="FILE", help="write the calibration (noise floor per case) as JSON")
    _ab_args(p)
    p.set_defaults(func=cmd_ab, kind="aa")

    p = sub.add_parser("history", help="plot every case's throughput over many runs, with change points",
                       description="Find results.json files under a folder, order them by time, and write one "
                                   "HTML page with each case's throughput per run (labelled with the git commit), "
                                   "change points marked; runs on different environments are separate series.")
    p.add_argument("results_dir", type=Path, help="folder searched (recursively) for results.json files")
    p.add_argument("--out", type=Path, required=True, help="HTML file to write")
    p.add_argument("--skip-invalid", action="store_true",
                   help="skip results files that cannot be read, with a warning each (default: exit 2)")
    p.add_argument("--json", type=Path, metavar="FILE",
                   help="write every change point (case, runs and commits before and after, change, interval) as JSON")
    p.add_argument("--calibration", type=Path, metavar="FILE",
                   help="noise floor from `bench aa --save FILE` (default: twice each series' own noise)")
    _plotlyjs_arg(p)
    p.set_defaults(func=cmd_history)
    _export_parser(sub)
    return parser


def _ab_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="output folder (default: a new folder under reports/)")
    p.add_argument("--only", metavar="PATTERN", help="run only cases whose id matches this glob (or contains it)")
    p.add_argument("--base-python", default=sys.executable, metavar="PYTHON",
                   help="interpreter of the base side's case processes (default: this one)")
    p.add_argument("--new-python", default=sys.executable, metavar="PYTHON",
                   help="interpreter of the new side's case processes (default: this one)")
    p.add_argument("--threshold", type=float, metavar="PCT",
                   help="changes smaller than this many percent are 'unchanged' (default 2)")
    p.add_argument("--pairs-per-launch", type=int, metavar="N",
                   help="pairs taken from each launch, a fresh start of both sides (default 20 with both sides in "
                        "one process, 10 with a process per side)")
    p.add_argument("--separate-processes", action="store_true",
                   help="a process per side in every launch, not one process holding both sides' models: for code "
                        "that changes torch's global settings when imported, or models that do not fit in memory "
                        "together (much noisier on a shared machine: each process draws its own speed)")
    p.add_argument("--min-launches", type=int, metavar="N", help="launches before the first look (default 8)")
    p.add_argument("--max-launches", type=int, metavar="N",
                   help="launches per case and set before 'inconclusive' (default 24)")
    p.add_argument("--max-time", type=float, metavar="S",
                   help="seconds of measuring per case, start-ups included, pooled over the run: a case may use "
                        "what is left divided by the cases left, a confirmation as long as its first set, a suspected "
                        "change 1.5 times that; then 'inconclusive' (default 65)")
    p.add_argument("--no-confirm", action="store_true", help="do not confirm a flagged case with fresh pairs")
    p.add_argument("--half-windows", type=int, metavar="N",
                   help="timing windows (of measure.window_time each) in each half of a pair; a half's value is "
                        "their median (default 2)")
    p.add_argument("--order-seed", type=int, metavar="N", help="seed of the pairs' order (default: fresh; recorded)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="write a run in another tool's format (pytest-benchmark JSON)",
                       description="Convert a results file for other tools. pytest-benchmark: one benchmark per ok "
                                   "case, the seconds of one training step per trial (lower is better, ops = steps "
                                   "per second), throughput and parameters in extra_info.")
    p.add_argument("results", type=Path, help="results.json (or a folder holding one)")
    p.add_argument("--format", required=True, metavar="FORMAT", help="the format to write: pytest-benchmark")
    p.add_argument("--out", type=Path, metavar="FILE", help="file to write (default: standard output)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from bench import export

    exported = export.export_run(args.results, args.format)  # fully built before anything is written
    for warning in exported.warnings:
        print(f"bench: warning: {warning}", file=sys.stderr)
    if args.out is None:
        sys.stdout.write(exported.text)
    else:
        from bench.results import write_output

        print(f"exported {exported.count} benchmark(s): {write_output(args.out, exported.text)}")
    return EXIT_OK


def _version() -> str:
    from bench import __version__

    return __version__


def cmd_validate(args: argparse.Namespace) -> int:
    from bench import suite as suite_mod

    suite = suite_mod.load(args.suite, args.overrides)
    print(f"{args.suite}: ok, suite {suite.name!r} expands to {len(suite.cases)} case(s)")
    _print_notes(suite)
    return EXIT_OK


def _print_notes(suite: Suite) -> None:
    """Notes about case ids (a suffix that made one unique) go to stderr, so `bench list`'s
    output stays one id per line."""
    for case in suite.cases:
        if case.note:
            print(f"bench: note: {case.id}: {case.note}", file=sys.stderr)


def cmd_list(args: argparse.Namespace) -> int:
    if args.components:
        from bench.collectors.config import PROFILERS
        from bench.components import (
            ACTIVATIONS,
            COMPILE_MODES,
            LOSSES,
            MODES,
            OPTIMIZERS,
            PRECISIONS,
            TRANSFORMS,
        )
        from bench.models import MODELS, TORCHVISION_PREFIX

        for registry in (MODELS, OPTIMIZERS, ACTIVATIONS, LOSSES, TRANSFORMS, PROFILERS, MODES, PRECISIONS,
                         COMPILE_MODES):
            print(f"{registry.plural}:")
            for entry in registry:
                print(f"  {entry.name:<22} {entry.doc}")
            if registry is MODELS:
                print(f"  {TORCHVISION_PREFIX + 'NAME':<22} any torchvision.models classifier, random weights")
                print(f"  {'{import: pkg.mod:fn}':<22} your own factory returning an nn.Module")
            if registry is COMPILE_MODES:
                print("compile: false (default), true, or {mode, fullgraph, dynamic, backend}; backend: any torch.compile "
                      "backend (default inductor)")
                print("channels_last, activation_checkpointing: false (default) or true; grad_accum: micro-batches "
                      "per optimizer step (default 1); reshard_after_forward (fsdp): true or false")
        return EXIT_OK
    if not args.suite:
        raise BenchError("list: give a suite file or --components")
    from bench import suite as suite_mod

    suite = suite_mod.load(args.suite, args.overrides).select(args.only)
    for case in suite.cases:
        print(case.id)
    _print_notes(suite)
    return EXIT_OK


def _default_out(name: str) -> Path:
    """A new folder under reports/ named after the suite and the time; never an existing one,
    so two runs started in the same second do not share (and overwrite) a folder."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    base = Path("reports") / f"{safe}-{stamp}"
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
        except OSError:
            return candidate  # prepare_output reports why it cannot be written
    raise UsageError(f"{base}: too many runs in one second")


def _cluster(args: argparse.Namespace) -> Any:
    from bench.launch import Cluster

    if args.nnodes < 1:
        raise UsageError(f"--nnodes: must be at least 1, not {args.nnodes}")
    if not 0 <= args.node_rank < args.nnodes:
        raise UsageError(f"--node-rank: must be in 0..{args.nnodes - 1}, not {args.node_rank}")
    if args.nnodes > 1:
        host, _, port = (args.rdzv_endpoint or "").rpartition(":")
        if not host or not port.isdigit():
            raise UsageError("--rdzv-endpoint: a multi-node run needs HOST:PORT of node 0's rendezvous")
    return Cluster(nnodes=args.nnodes, node_rank=args.node_rank, rdzv_endpoint=args.rdzv_endpoint)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    from bench import console, runner
    from bench import suite as suite_mod

    cluster = _cluster(args)
    previous = None
    if args.resume is not None:
        from bench.results import load_run

        previous = load_run(args.resume).doc
        # Unless told otherwise, resume exactly what was started: same suite, --set and --only.
        args.suite = args.suite or previous.suite.path
        args.overrides = args.overrides or previous.run.overrides
        args.only = args.only or previous.run.only
    if not args.suite:
        raise UsageError("run: give a suite file (or --resume DIR)")
    suite = suite_mod.load(args.suite, args.overrides).select(args.only)
    # A node other than node 0 writes nothing, so it gets no default folder either.
    out_dir: Path = args.resume or args.out or (_default_out(suite.name) if cluster.node_rank == 0 else Path("."))
    if cluster.node_rank == 0:  # only node 0 writes results
        from bench.results import prepare_output

        prepare_output(out_dir)  # a clear error before the progress display starts and before any case runs
    # SIGTERM (a CI job cancelled, `kill`) stops the run like Ctrl-C: kill the case, keep results.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    observer = console.ProgressObserver(enabled=not args.quiet)
    try:
        with observer:
            outcome = runner.run_suite(suite, out_dir, argv=sys.argv, overrides=args.overrides,
                                       only=args.only, observer=observer, cluster=cluster, previous=previous,
                                       order_seed=args.order_seed, reference=not args.no_reference)
    except runner.Interrupted as exc:
        _finish_report(out_dir, args)
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if cluster.node_rank != 0:
        console.print_results(outcome.records)
        print(f"node {cluster.node_rank}: done; node 0 writes the results")
        return EXIT_FAILED if outcome.failed else EXIT_OK
    report = _finish_report(out_dir, args)
    console.print_results(outcome.records)
    console.print_effects(outcome.effects)
    print(f"results: {outcome.results_path}")
    if report is not None:
        print(f"report:  {report}")
    return EXIT_FAILED if outcome.failed else EXIT_OK


def _finish_report(out_dir: Path, args: argparse.Namespace) -> Path | None:
    if args.no_report:
        return None
    from bench.report import write_report
    from bench.results import load_run

    results = out_dir / "results.json"
    if not results.exists():
        return None
    return write_report([load_run(results)], out_dir / "report.html")


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import write_report
    from bench.results import load_runs

    runs = load_runs(args.results)
    if args.labels:
        from bench.report import relabel

        runs = relabel(runs, args.labels)
    comparisons = _comparisons(runs)
    path = write_report(runs, args.out, inline_plotlyjs=not args.link_plotlyjs, comparisons=comparisons)
    print(f"report: {path}")
    return EXIT_OK


def _comparisons(runs: list[Any]) -> list[Any] | None:
    """Verdicts of every later run against the first (the baseline), for the report's comparison
    view; a run that shares no case with the baseline is shown without verdicts, and a warning
    says so."""
    if len(runs) < 2:
        return None
    from bench import compare

    found = []
    for run in runs[1:]:
        try:
            found.append(compare.compare_runs(runs[0], run))
        except UsageError:
            print(f"bench: warning: {run.path}: shares no case id with the baseline {runs[0].path}; "
                  f"the report shows it without verdicts", file=sys.stderr)
    return found or None


def cmd_compare(args: argparse.Namespace) -> int:
    from bench import compare
    from bench.results import load_runs

    calibration = None
    if args.calibration is not None:
        from bench import calibration as calibration_mod

        calibration = calibration_mod.load(args.calibration)
    base, new = load_runs([args.base, args.new])
    comparison = compare.compare_runs(base, new, args.fail_on, alpha=args.alpha, correction=args.correction,
                                      min_samples=args.min_samples, calibration=calibration)
    compare.print_comparison(comparison)
    if args.markdown:
        compare.write_markdown(comparison, args.markdown)
    if args.json:
        compare.write_json(comparison, args.json)
    if args.html:
        from bench.report import write_report

        write_report([base, new], args.html, comparisons=[comparison])
    compare.check_environment(comparison, strict=args.strict_env)
    return EXIT_FAILED if comparison.regressions else EXIT_OK


def cmd_ab(args: argparse.Namespace) -> int:
    from bench import ab, console, sides, userpath
    from bench import suite as suite_mod

    threshold = None if args.threshold is None else args.threshold / 100
    settings = ab.settings_from(args.order_seed, threshold=threshold, pairs_per_launch=args.pairs_per_launch,
                                min_launches=args.min_launches, max_launches=args.max_launches,
                                max_time=args.max_time, half_windows=args.half_windows,
                                confirm=False if args.no_confirm else None)
    base_spec, new_spec = (args.side, args.side) if args.kind == "aa" else (args.base, args.new)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with sides.open_sides(base_spec, new_spec, base_python=args.base_python, new_python=args.new_python) as (base, new):
        # The suite must hold on both sides (its models import from each side's code) before
        # anything runs; the cases are the same on both, from the one suite file.
        loaded = []
        for side in (base, new):
            with userpath.side(side.directory):
                loaded.append(suite_mod.load(args.suite, args.overrides).select(args.only))
        suite = loaded[0]
        out_dir: Path = args.out or _default_out(f"{suite.name}-{args.kind}")
        try:
            outcome = ab.run_ab(suite, base, new, out_dir, settings, argv=sys.argv, overrides=args.overrides,
                                only=args.only, kind=args.kind, observer=console.ABObserver(enabled=not args.quiet),
                                separate=args.separate_processes)
        except ab.Interrupted as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return EXIT_INTERRUPTED
    console.print_ab(outcome.doc)
    print(f"results: {out_dir / ab.AB_NAME}")
    print(f"report:  {out_dir / 'ab.html'}")
    if args.kind == "aa" and args.save is not None:
        from bench import calibration

        path = calibration.save(outcome.doc, out_dir, args.save)
        print(f"calibration: {path}")
    if args.kind == "aa":
        return EXIT_OK
    return EXIT_FAILED if outcome.regressions or outcome.broken else EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from bench import history

    calibration = None
    if args.calibration is not None:
        from bench import calibration as calibration_mod

        calibration = calibration_mod.load(args.calibration)
    found = history.load_history(args.results_dir, skip_invalid=args.skip_invalid, calibration=calibration)
    for problem in found.skipped:
        print(f"bench: warning: skipped {problem}", file=sys.stderr)
    for warning in found.warnings:
        print(f"bench: warning: {warning}", file=sys.stderr)
    path = history.write_history(found, args.out, inline_plotlyjs=not args.link_plotlyjs)
    if args.json:
        history.write_json(found, args.json)
    print(f"history: {len(found.runs)} run(s), {len(found.series)} series, "
          f"{sum(len(s.change_points) for s in found.series)} change point(s): {path}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return func(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `bench list | head`: the reader left; not an error of ours.
        sys.stderr.close()
        return EXIT_OK
