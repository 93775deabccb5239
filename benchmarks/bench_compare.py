"""Speed of `bench compare` on two results files of 1,000 cases each (the target is under 2 s for
loading both and comparing). Run with: pytest benchmarks --benchmark-only"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.compare import compare_runs
from bench.results import load_run

TEMPLATE = Path(__file__).resolve().parent.parent / "tests" / "data" / "compare" / "base.json"
CASES = 1000


def write_run(path: Path, seed: int) -> Path:
    """A results file of CASES cases shaped like a real run (30-60 windows, 30 step times each)."""
    doc: dict[str, Any] = json.loads(TEMPLATE.read_text())
    template = doc["cases"][0]
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(CASES):
        case = copy.deepcopy(template)
        case["id"] = f"case-{i}"
        n = int(rng.integers(30, 60))
        thr = (1000 + i) * np.exp(rng.normal(0, 0.03, n))
        case["samples"]["window_throughput"] = thr.tolist()
        case["samples"]["window_s"] = (16 / thr).tolist()
        case["samples"]["window_start_s"] = np.cumsum(16 / thr).tolist()
        case["metrics"]["throughput"]["median"] = float(np.median(thr))
        cases.append(case)
    doc["cases"] = cases
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("compare-bench")
    return write_run(tmp / "base.json", 1), write_run(tmp / "new.json", 2)


def test_compare_two_thousand_case_files(benchmark: Any, files: tuple[Path, Path]) -> None:
    def load_and_compare() -> int:
        base, new = load_run(files[0]), load_run(files[1])
        return len(compare_runs(base, new).rows)

    assert benchmark.pedantic(load_and_compare, rounds=3, iterations=1) == CASES


def test_compare_only_two_thousand_case_runs(benchmark: Any, files: tuple[Path, Path]) -> None:
    base, new = load_run(files[0]), load_run(files[1])
    result = benchmark.pedantic(compare_runs, args=(base, new), rounds=3, iterations=1)
    assert len(result.rows) == CASES
    assert not result.regressions
