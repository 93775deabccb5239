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
from typing import Any

from bench.errors import BenchError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse prints usage + message; keep it to one line
        sys.stderr.write(f"bench: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


def _suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="suite YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter in every case, e.g. --set batch_size=32 --set measure.max_time=2")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bench", description="Benchmark and profile PyTorch training from YAML suites.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("run", help="run every case of a suite and write results.json and report.html",
                       description="Run every case of a suite, each in its own process.")
    _suite_args(p)
    p.add_argument("--out", type=Path, help="output folder (default: a new folder under reports/)")
    p.add_argument("--only", metavar="PATTERN", help="run only cases whose id matches this glob (or contains it)")
    p.add_argument("--no-report", action="store_true", help="write results.json only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a suite without running it",
                       description="Validate a suite file and report how many cases it expands to.")
    _suite_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("list", help="list a suite's case ids, or the available components",
                       description="Print the expanded case ids of a suite (nothing is run), or with "
                                   "--components the names of every model, optimizer, activation, loss and transform.")
    p.add_argument("suite", nargs="?", help="suite YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter in every case")
    p.add_argument("--only", metavar="PATTERN", help="list only cases whose id matches")
    p.add_argument("--components", action="store_true", help="list the registered building blocks")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("report", help="write an HTML report from one or more results files",
                       description="Build one self-contained HTML page from results files or folders.")
    p.add_argument("results", nargs="+", type=Path, help="results.json files or folders holding one")
    p.add_argument("--out", type=Path, required=True, help="HTML file to write")
    p.add_argument("--link-plotlyjs", action="store_true",
                   help="load plotly.js from its CDN instead of inlining it (smaller file, needs a network)")
    p.set_defaults(func=cmd_report)
    return parser


def _version() -> str:
    from bench import __version__

    return __version__


def cmd_validate(args: argparse.Namespace) -> int:
    from bench import suite as suite_mod

    suite = suite_mod.load(args.suite, args.overrides)
    print(f"{args.suite}: ok, suite {suite.name!r} expands to {len(suite.cases)} case(s)")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    if args.components:
        from bench.components import ACTIVATIONS, LOSSES, OPTIMIZERS, TRANSFORMS
        from bench.models import MODELS, TORCHVISION_PREFIX

        for registry in (MODELS, OPTIMIZERS, ACTIVATIONS, LOSSES, TRANSFORMS):
            print(f"{registry.kind}s:")
            for entry in registry:
                print(f"  {entry.name:<22} {entry.doc}")
            if registry is MODELS:
                print(f"  {TORCHVISION_PREFIX + 'NAME':<22} any torchvision.models classifier, random weights")
                print(f"  {'{import: pkg.mod:fn}':<22} your own factory returning an nn.Module")
        return EXIT_OK
    if not args.suite:
        raise BenchError("list: give a suite file or --components")
    from bench import suite as suite_mod

    suite = suite_mod.load(args.suite, args.overrides).select(args.only)
    for case in suite.cases:
        print(case.id)
    return EXIT_OK


def _default_out(name: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return Path("reports") / f"{safe}-{stamp}"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    from bench import console, runner
    from bench import suite as suite_mod

    suite = suite_mod.load(args.suite, args.overrides).select(args.only)
    out_dir: Path = args.out or _default_out(suite.name)
    # SIGTERM (a CI job cancelled, `kill`) stops the run like Ctrl-C: kill the case, keep results.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    observer = console.ProgressObserver(enabled=not args.quiet)
    try:
        with observer:
            outcome = runner.run_suite(suite, out_dir, argv=sys.argv, overrides=args.overrides,
                                       only=args.only, observer=observer)
    except runner.Interrupted as exc:
        _finish_report(out_dir, args)
        print(f"bench: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    report = _finish_report(out_dir, args)
    console.print_results(outcome.records)
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
    path = write_report(runs, args.out, inline_plotlyjs=not args.link_plotlyjs)
    print(f"report: {path}")
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
