"""What `bench ab` detects on this machine, counted over repeated runs (the README's detection table).

    python benchmarks/detection.py [--runs 20] [--conditions aa,5,10] [--out detection.json]

Two sides in temporary directories, each with its own copy of a user model (a stack of 256-wide
linear blocks, batch 64, SGD): the base side has 40 blocks; the new side 40 (``aa``: the same
work), 42 (``5``: about 5% more work) or 44 (``10``: about 10% more). The suite has two cases: that
user model, and the built-in ``mlp``, which is the same code on both sides (a second chance of a
false alarm in every run). Each run is one `bench ab` with its defaults; the conditions take turns
(run 1 of each, then run 2 of each...) so that each sees the same hours of the machine's drift.

Counts per condition: how often the user case was called a regression, an improvement,
unchanged or inconclusive; false alarms on the unchanged `mlp` case; the wall time of each run
(median and maximum). Every run's verdicts are appended to ``--out`` as they finish, so an
interrupted measurement keeps what it measured. Prints JSON; asserts nothing. The machine must be
otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = '''
import torch.nn as nn


def model(width: int = 256, num_classes: int = 10) -> nn.Module:
    layers = [nn.Flatten(), nn.Linear(width, width)]
    for _ in range({blocks}):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, num_classes))
'''

SUITE = """
name: detection
defaults:
  batch_size: 64
  optimizer: sgd
  data: synthetic
matrix:
  model:
    - {import: "abdetect:model", input_shape: [256], label: user}
    - mlp
"""

BLOCKS = {"aa": 40, "5": 42, "10": 44}


def make_side(root: Path, name: str, blocks: int) -> Path:
    side = root / name
    side.mkdir()
    (side / "abdetect.py").write_text(MODEL.format(blocks=blocks), encoding="utf-8")
    return side


def one_run(root: Path, condition: str, index: int, extra: list[str]) -> dict[str, Any]:
    out = root / f"out-{condition}-{index}"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench", "ab", str(root / "suite.yaml"), "--base", "base",
                           "--new", f"new-{condition}", "--out", str(out), "--quiet", *extra],
                          cwd=root, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    found: dict[str, Any] = {"condition": condition, "run": index, "exit": proc.returncode, "seconds": round(seconds, 1)}
    try:
        doc = json.loads((out / "ab.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        found["error"] = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return found
    for case in doc["cases"]:
        found[case["id"]] = {"verdict": case["verdict"], "ratio": case.get("ratio"), "low": case.get("low"),
                             "high": case.get("high"), "pairs": case["pairs"],
                             "stages": [{"answer": s["answer"], "launches": s["launches"], "pairs": s["pairs"],
                                         "stop": s["stop_reason"], "seconds": round(s["measured_s"], 1)}
                                        for s in case["stages"]]}
    return found


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for condition in dict.fromkeys(r["condition"] for r in runs):
        mine = [r for r in runs if r["condition"] == condition]
        user = [r["user"]["verdict"] for r in mine if "user" in r]
        mlp = [r["mlp"]["verdict"] for r in mine if "mlp" in r]
        seconds = [r["seconds"] for r in mine]
        out[condition] = {
            "runs": len(mine),
            "user": {v: user.count(v) for v in ("regression", "improvement", "unchanged", "inconclusive", "failed")},
            "mlp_false_alarms": sum(v in ("regression", "improvement") for v in mlp),
            "mlp": {v: mlp.count(v) for v in ("regression", "improvement", "unchanged", "inconclusive", "failed")},
            "exit_1": sum(r["exit"] == 1 for r in mine),
            "user_pairs_median": statistics.median(r["user"]["pairs"] for r in mine if "user" in r) if user else None,
            "seconds_median": statistics.median(seconds), "seconds_max": max(seconds),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--conditions", default="aa,5,10", help="comma-separated: aa, 5, 10")
    parser.add_argument("--out", type=Path, default=Path("detection.json"), help="every run's verdicts, as they finish")
    parser.add_argument("extra", nargs="*", help="more `bench ab` options, after --")
    args = parser.parse_args()
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-detection-") as tmp:
        root = Path(tmp)
        (root / "suite.yaml").write_text(SUITE, encoding="utf-8")
        make_side(root, "base", BLOCKS["aa"])
        for c in conditions:
            make_side(root, f"new-{c}", BLOCKS[c])
        for i in range(args.runs):
            for c in conditions:
                found = one_run(root, c, i, args.extra)
                runs.append(found)
                print(json.dumps(found), file=sys.stderr, flush=True)
                args.out.write_text(json.dumps({"runs": runs, "summary": summary(runs)}, indent=1), encoding="utf-8")
    print(json.dumps(summary(runs), indent=1))


if __name__ == "__main__":
    main()
