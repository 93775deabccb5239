"""Do the numbers replicate on this machine? Three measurements of the rounds design (bench.rounds).

    python benchmarks/replication.py replication [--runs 2] [--max-time 8]
    python benchmarks/replication.py coverage [--runs 10] [--max-time 5]
    python benchmarks/replication.py cost [SUITE ...] [--before REV]
    python benchmarks/replication.py compare [--runs 3] [--max-time 3]

replication: a suite of six identical cases (a 40-layer MLP, only the seed differs) and one with
about 10% more work (44 layers), run ``--runs`` times. Per run: in how many of the 15 pairs of
identical cases the 95% intervals overlap, whether the heavier case ranks last, and its paired
effect against the identical case of the same seed; across runs: how many cases' intervals agree.

coverage: one case run ``--runs`` times, one run after another; the share of runs whose 95%
interval contains the median of all the runs' medians (run-to-run replication of one interval).

cost: the wall time of each suite with this code and with the code at ``--before`` (a git
revision, checked out into a temporary worktree), interleaved, one run each.

compare: `bench compare` (unpaired, its default rule throughput:-5%) on real runs of the planted
two-case suite (tests/planted/suite.yaml), ``--runs`` runs of unchanged code and as many with 10%
more work, alternating: A/A false alarms over every ordered pair of unchanged runs, and how often
each slowed run is flagged against each unchanged one.

Prints JSON; asserts nothing. The machine must be otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

SUITE = """
name: replication
defaults:
  batch_size: 64
  optimizer: sgd
  measure: {{warmup_steps: 20, min_time: 1.0, max_time: {max_time}, target_ci: 0.001}}
matrix:
  model: [{{name: mlp, kwargs: {{hidden: {same}}}, label: base}}]
  seed: [0, 1, 2, 3, 4, 5]
include:
  - {{model: {{name: mlp, kwargs: {{hidden: {heavy}}}, label: heavy}}, seed: 0}}
"""

ONE = """
name: coverage
defaults:
  batch_size: 64
  measure: {{warmup_steps: 20, min_time: 1.0, max_time: {max_time}, target_ci: 0.001}}
matrix:
  model: [{{name: mlp, kwargs: {{hidden: {same}}}, label: base}}]
"""


def run_suite(text: str, out: Path, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    suite = out / "suite.yaml"
    suite.write_text(text, encoding="utf-8")
    subprocess.run([sys.executable, "-m", "bench", "run", str(suite), "--out", str(out / "run"), "--quiet",
                    "--no-report", *extra], cwd=ROOT, check=True, capture_output=True, env=env)
    doc: dict[str, Any] = json.loads((out / "run" / "results.json").read_text(encoding="utf-8"))
    return doc


def interval(case: dict[str, Any]) -> tuple[float, float, float]:
    thr = case["metrics"]["throughput"]
    return thr["median"], thr["ci95"][0], thr["ci95"][1]


def overlaps(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    return a[1] <= b[2] and b[1] <= a[2]


def replication(runs: int, max_time: float) -> dict[str, Any]:
    text = SUITE.format(max_time=max_time, same=[256] * 40, heavy=[256] * 44)
    out: dict[str, Any] = {"runs": []}
    docs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            t0 = time.monotonic()
            doc = run_suite(text, Path(tmp) / f"r{i}")
            docs.append(doc)
            cases = {c["id"]: c for c in doc["cases"]}
            same = [interval(c) for c in doc["cases"] if c["params"]["model"].get("label") != "heavy"]
            heavy_id = next(c["id"] for c in doc["cases"] if c["params"]["model"].get("label") == "heavy")
            ranked = sorted(cases, key=lambda k: interval(cases[k])[0])
            effect = next((e for e in doc["effects"] if e["parameter"] == "model"), None)
            out["runs"].append({
                "wall_s": round(time.monotonic() - t0, 1),
                "rounds": doc["rounds"]["completed"],
                "identical_pairs_overlapping": sum(overlaps(a, b) for a, b in combinations(same, 2)),
                "identical_pairs": len(list(combinations(same, 2))),
                "identical_spread_pct": round((max(m for m, _, _ in same) / min(m for m, _, _ in same) - 1) * 100, 1),
                "interval_half_width_pct": [round((h - lo) / 2 / m * 100, 1) for m, lo, h in same],
                "heavier_ranks_last": ranked[0] == heavy_id,
                "heavier_effect_pct": None if effect is None or effect["ratio"] is None else
                [round((effect[k] - 1) * 100, 1) for k in ("ratio", "low", "high")],
                # Seeds change nothing but the random numbers: their paired effects are A/A comparisons.
                "seed_effects_including_zero": sum(e["low"] <= 1 <= e["high"] for e in doc["effects"]
                                                   if e["parameter"] == "seed" and e["ratio"] is not None),
                "seed_effects_pct": [[round((e[k] - 1) * 100, 1) for k in ("ratio", "low", "high")]
                                     for e in doc["effects"] if e["parameter"] == "seed" and e["ratio"] is not None],
                "medians": {k: round(interval(c)[0]) for k, c in cases.items()},
            })
    if len(docs) >= 2:
        a, b = ({c["id"]: interval(c) for c in d["cases"]} for d in docs[:2])
        out["cases_agreeing_between_runs"] = sum(overlaps(a[k], b[k]) for k in a)
        out["cases"] = len(a)
    return out


def coverage(runs: int, max_time: float) -> dict[str, Any]:
    text = ONE.format(max_time=max_time, same=[256] * 40)
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            (case,) = run_suite(text, Path(tmp) / f"r{i}")["cases"]
            found.append(interval(case))
    centre = statistics.median(m for m, _, _ in found)
    return {"runs": runs, "median_of_runs": round(centre, 1),
            "covering": sum(lo <= centre <= hi for _, lo, hi in found),
            "intervals": [[round(v) for v in f] for f in found],
            "half_width_pct": [round((hi - lo) / 2 / m * 100, 1) for m, lo, hi in found]}


def compare_runs_planted(runs: int, max_time: float) -> dict[str, Any]:
    from bench.compare import compare_runs
    from bench.results import load_run

    suite = ROOT / "tests" / "planted" / "suite.yaml"
    paths: dict[str, list[Path]] = {"a": [], "slow": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            for kind, factor in (("a", "1.0"), ("slow", "1.10")):
                out = Path(tmp) / f"{kind}{i}"
                env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_PLANTED_SLOWDOWN": factor}
                subprocess.run([sys.executable, "-m", "bench", "run", str(suite), "--out", str(out), "--quiet",
                                "--no-report", "--set", f"measure.max_time={max_time}",
                                "--set", f"measure.min_time={max_time / 2}"],
                               cwd=ROOT, check=True, capture_output=True, env=env)
                paths[kind].append(out)
        verdicts: dict[str, list[str]] = {"aa": [], "slowed": []}
        for base, new in ((x, y) for x in paths["a"] for y in paths["a"] if x != y):
            verdicts["aa"] += [r.verdict for r in compare_runs(load_run(base), load_run(new)).rows]
        for base in paths["a"]:
            for new in paths["slow"]:
                verdicts["slowed"] += [r.verdict for r in compare_runs(load_run(base), load_run(new)).rows]
    count = lambda vs: {v: vs.count(v) for v in ("regression", "improvement", "inconclusive", "unchanged")}  # noqa: E731
    return {"runs_each": runs, "aa_case_comparisons": count(verdicts["aa"]),
            "slowed_case_comparisons": count(verdicts["slowed"])}


def cost(suites: list[str], before: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), before], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for suite in suites:
                times = {}
                for label, where in (("before", old), ("after", ROOT)):
                    env = {**os.environ, "PYTHONPATH": str(where)}
                    t0 = time.monotonic()
                    subprocess.run([sys.executable, "-m", "bench", "run", str(ROOT / suite), "--out",
                                    str(Path(tmp) / f"{label}-{Path(suite).stem}"), "--quiet", "--no-report"],
                                   cwd=where, check=False, capture_output=True, env=env)
                    times[label] = round(time.monotonic() - t0, 1)
                out[suite] = times
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False,
                           capture_output=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["replication", "coverage", "cost", "compare"])
    parser.add_argument("suites", nargs="*", default=["suites/smoke.yaml", "suites/cnn.yaml", "suites/mlp.yaml"])
    parser.add_argument("--runs", type=int)
    parser.add_argument("--max-time", type=float)
    parser.add_argument("--before", default="71b4ba8", help="revision for `cost` (default: before rounds)")
    args = parser.parse_args()
    if args.what == "replication":
        result = replication(args.runs or 2, args.max_time or 8.0)
    elif args.what == "coverage":
        result = coverage(args.runs or 10, args.max_time or 5.0)
    elif args.what == "compare":
        result = compare_runs_planted(args.runs or 3, args.max_time or 3.0)
    else:
        result = cost(args.suites, args.before)
    print(json.dumps(result, indent=1))
