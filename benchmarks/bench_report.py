"""Report build time over 1,000 cases (the issue's budget: at most 10 s on the CI machine, and the
file within 2 MB above plotly.js). Run with: pytest benchmarks --benchmark-only

The cases are the worst kind for the page: every one with GPU telemetry, CUDA memory, FLOPs and
raw step samples (tests/test_report_synthetic.py makes them). Two figures: `bench report` as a
user runs it (load and validate the file, build, write) and the build alone."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import plotly.offline
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_report_synthetic import make_doc, write_doc

from bench.report import render, write_report
from bench.results import load_run, load_runs

CASES = 1000


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_doc(tmp_path_factory.mktemp("report") / "big", make_doc(CASES, n_samples=100))


def test_report_command_over_a_thousand_cases(benchmark: Any, results: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"

    def build() -> int:
        return write_report(load_runs([results]), out).stat().st_size

    size = benchmark.pedantic(build, rounds=3, iterations=1)
    above = size - len(plotly.offline.get_plotlyjs().encode())
    benchmark.extra_info["bytes_above_plotlyjs"] = above
    assert above <= 2_000_000


def test_report_build_alone_over_a_thousand_cases(benchmark: Any, results: Path) -> None:
    run = load_run(results)
    html = benchmark.pedantic(render, args=([run],), rounds=3, iterations=1)
    assert html.count("<tr>") > CASES
