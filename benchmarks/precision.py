"""Precision per second: how tight the throughput interval gets, and how fast, with default settings.

    python benchmarks/precision.py [suites/mlp.yaml suites/cnn.yaml]

Runs each suite as shipped and reports, over its cases, the distribution of the 95% CI half-width
(as a fraction of the median) at stop and the measured seconds it took, and how many cases reached
a half-width of 1% within 10 s. Prints a JSON summary; asserts nothing.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quantiles(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    pick = lambda q: s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]  # noqa: E731
    return {"min": s[0], "p25": pick(0.25), "median": statistics.median(s), "p75": pick(0.75), "max": s[-1]}


def run(suite: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "bench", "run", suite, "--out", tmp, "--quiet", "--no-report"],
                       cwd=ROOT, check=False, capture_output=True)
        doc = json.loads((Path(tmp) / "results.json").read_text())
    ok = [c for c in doc["cases"] if c["status"] == "ok"]
    widths = [c["metrics"]["throughput"]["ci_rel_half_width"] for c in ok]
    seconds = [c["metrics"]["measured_s"] for c in ok]
    return {
        "cases": len(doc["cases"]),
        "ok": len(ok),
        "ci_half_width": quantiles(widths),
        "measured_s": quantiles(seconds),
        "within_1pct_in_10s": sum(w <= 0.01 and s <= 10.5 for w, s in zip(widths, seconds, strict=True)),
        "per_case": {c["id"]: [round(w, 4), round(s, 2)] for c, w, s in zip(ok, widths, seconds, strict=True)},
    }


if __name__ == "__main__":
    suites = sys.argv[1:] or ["suites/mlp.yaml", "suites/cnn.yaml"]
    print(json.dumps({s: run(s) for s in suites}, indent=1))
