"""Does `bench history` cry wolf on this machine? Runs of unchanged code, then a planted step.

    python benchmarks/history_drift.py [--same 6] [--changed 3] [--max-time 4] [--repeats 1]

In a temporary git repository: a suite of two cases (a user model, a stack of 256-wide linear
blocks, and the built-in ``mlp``); ``--same`` runs of one commit, one after another, then a commit
that gives the user model 10% more blocks (40 -> 44) and ``--changed`` runs of it. Then `bench
history --json` over all the runs. Goal: no change point among the runs of the first commit, the
planted step found at the first run of the second commit in the user case only. ``--repeats N``
gives every case N processes per run (the suite's ``repeats``), so that a run's figure is not one
process's luck.

Prints JSON: the change points found (relative throughput, as `bench history` uses: on CPU cases
over the reference measured in each case's own process, ``bench.reference``), the raw
throughput's spread over the runs of the first commit, and what the same change-point test finds
on raw throughput with every run its own commit (as a history without repeats or a reference
would see it). Asserts nothing. The machine must be otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# The same user model as the detection script's: a stack of 256-wide linear blocks.
from detection import MODEL  # benchmarks/ is this script's folder, first on its import path

SUITE = """
name: history-drift
defaults:
  batch_size: 64
  optimizer: sgd
  data: synthetic
  repeats: {repeats}
  measure: {{warmup_steps: 10, min_time: 1.0, max_time: {max_time}, target_ci: 0.001}}
matrix:
  model:
    - {{import: "histmodel:model", input_shape: [256], label: user}}
    - mlp
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=bench@localhost", "-c", "user.name=bench", *args], cwd=repo,
                          capture_output=True, text=True, check=True).stdout.strip()


def run(repo: Path, out: Path) -> None:
    subprocess.run([sys.executable, "-m", "bench", "run", "suite.yaml", "--out", str(out), "--quiet", "--no-report"],
                   cwd=repo, capture_output=True, text=True, check=False)


def _round_relative(history: Any) -> dict[str, list[float]]:
    """Each case's trials over the round reference's throughput in the same round, median per run."""
    import statistics

    out: dict[str, list[float]] = {}
    for run in history.runs:
        ref = run.doc.rounds.reference if run.doc.rounds is not None else None
        if ref is None:
            continue
        medians = {t.round: t.median for t in ref.trials}
        for case in run.cases:
            ratios = [t.median / medians[t.round] for t in case.trials or [] if t.round in medians]
            if ratios:
                out.setdefault(case.id, []).append(statistics.median(ratios))
    return out


def _spread(values: list[float]) -> float | None:
    return max(values) / min(values) - 1 if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--same", type=int, default=6)
    parser.add_argument("--changed", type=int, default=3)
    parser.add_argument("--max-time", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=1, help="processes per case in every run")
    args = parser.parse_args()
    from bench.history import find_change_points, load_history

    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        (repo / "suite.yaml").write_text(SUITE.format(max_time=args.max_time, repeats=args.repeats), encoding="utf-8")
        (repo / "histmodel.py").write_text(MODEL.format(blocks=40), encoding="utf-8")
        git(repo, "init", "-q")
        git(repo, "add", ".")
        git(repo, "commit", "-qm", "40 blocks")
        runs = Path(tmp) / "runs"
        for i in range(args.same):
            run(repo, runs / f"{i:02d}-same")
            print(f"run {i + 1} of {args.same} (first commit)", file=sys.stderr, flush=True)
        (repo / "histmodel.py").write_text(MODEL.format(blocks=44), encoding="utf-8")
        git(repo, "commit", "-qam", "44 blocks: 10% more work")
        changed = git(repo, "rev-parse", "HEAD")[:10]
        for i in range(args.changed):
            run(repo, runs / f"{args.same + i:02d}-changed")
            print(f"run {i + 1} of {args.changed} (second commit)", file=sys.stderr, flush=True)
        listed = Path(tmp) / "cp.json"
        subprocess.run([sys.executable, "-m", "bench", "history", str(runs), "--out", str(Path(tmp) / "trend.html"),
                        "--json", str(listed)], capture_output=True, text=True, check=True)
        found = json.loads(listed.read_text(encoding="utf-8"))
        history = load_history(runs)
        by_round = _round_relative(history)
        raw: dict[str, Any] = {}
        for s in history.series:
            values = [p.raw for p in s.points]
            first = values[:args.same]
            cps, _ = find_change_points(values, [str(i) for i in range(len(values))])
            raw[s.case_id] = {"reference_source": sorted({str(p.relative_source) for p in s.points}),
                              "raw_per_run": [round(v, 1) for v in values],
                              "relative_per_run": [round(p.value, 4) for p in s.points] if s.relative else None,
                              # The same runs divided by the round's own reference process instead
                              # (what relative throughput was before companions), side by side.
                              "round_relative_per_run": [round(v, 4) for v in by_round.get(s.case_id, [])],
                              "round_relative_spread_first_commit": _spread(by_round.get(s.case_id, [])[:args.same]),
                              "spread_first_commit": max(first) / min(first) - 1,
                              "change_points_raw_one_commit_per_run": [(c.index, round(c.change, 4)) for c in cps],
                              "relative_spread_first_commit": (max(p.value for p in s.points[:args.same])
                                                               / min(p.value for p in s.points[:args.same]) - 1)
                              if s.relative else None}
        print(json.dumps({
            "runs": found["runs"], "planted_at_run": args.same, "changed_commit": changed,
            "change_points": [{k: c[k] for k in ("case_id", "values", "change", "ci95", "p", "runs_before",
                                                 "runs_after", "tentative")}
                              | {"at_run": c["run_after"]["order"], "commit_after": c["run_after"]["commit"]}
                              for c in found["change_points"]],
            "series": found["series"], "raw": raw}, indent=1))


if __name__ == "__main__":
    main()
