"""Harness speed: CLI start-up, per-case cost and matrix expansion.

    python benchmarks/harness_speed.py

Start-up: wall time of `bench --help`, `bench validate suites/cnn.yaml`, `bench list suites/cnn.yaml`
(median of 7 runs each) and whether torch was imported. Per-case cost: wall time of a suite run
minus the measured time of its cases, divided by the number of cases. Expansion: a 10,000-case
matrix loaded and expanded by bench.suite.load. Prints medians; asserts nothing.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - t0


def startup() -> dict[str, float]:
    exe = [sys.executable, "-m", "bench"]
    cmds = {"--help": [*exe, "--help"], "validate": [*exe, "validate", "suites/cnn.yaml"],
            "list": [*exe, "list", "suites/cnn.yaml"], "list --components": [*exe, "list", "--components"]}
    out = {k: statistics.median(wall(c) for _ in range(7)) for k, c in cmds.items()}
    probe = subprocess.run([sys.executable, "-c", "import sys; from bench.cli import main; main(['validate', "
                            "'suites/cnn.yaml']); print('torch' in sys.modules)"], cwd=ROOT, capture_output=True,
                           text=True, check=True)
    out["torch_imported"] = probe.stdout.strip().splitlines()[-1] == "True"
    return out


def per_case_cost(suite: str = "suites/cnn.yaml") -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench", "run", suite, "--out", tmp, "--quiet",
                        "--no-report", "--set", "measure.max_time=1", "--set", "measure.min_time=0.5"],
                       cwd=ROOT, check=False, capture_output=True)
        total = time.perf_counter() - t0
        doc = json.loads((Path(tmp) / "results.json").read_text())
    cases = doc["cases"]
    measured = sum((c["metrics"] or {}).get("measured_s", 0) + (c["metrics"] or {}).get("warmup_s", 0)
                   for c in cases)
    in_process = sum(c["duration_s"] for c in cases)
    return {"cases": len(cases), "wall_s": total, "measured_and_warmup_s": measured,
            "per_case_overhead_s": (total - measured) / len(cases),
            "per_case_overhead_excluding_startup_s": (in_process - measured) / len(cases)}


def expansion() -> dict[str, float]:
    from bench.suite import load

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        batches = ", ".join(str(i) for i in range(1, 51))
        rates = ", ".join(f"0.{i:03d}" for i in range(1, 11))
        seeds = ", ".join(str(i) for i in range(10))
        fh.write(f"name: big\nmatrix:\n  model: [mlp, cnn]\n  batch_size: [{batches}]\n  lr: [{rates}]\n"
                 f"  seed: [{seeds}]\n")
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        n = len(load(fh.name).cases)
        times.append(time.perf_counter() - t0)
    return {"cases": n, "expand_s_median": statistics.median(times)}


if __name__ == "__main__":
    print(json.dumps({"startup_s": startup(), "expansion": expansion(), "per_case": per_case_cost(),
                      "per_case_mlp": per_case_cost("suites/mlp.yaml")}, indent=1))
