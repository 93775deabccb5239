"""Ctrl-C / SIGTERM during `bench run` keep finished cases, leave no process, and --resume finishes the run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent

SUITE = """
name: interruptible
defaults:
  model: mlp
  batch_size: 16
  threads: 1
  measure: {warmup_steps: 1, min_time: 1.5, max_time: 2.0, target_ci: 0.0001, window_time: 0.02}
  timeout: 60
matrix:
  optimizer: [sgd, adam, adamw, rmsprop]
"""


def finished_cases(results: Path) -> list[str]:
    try:
        return [c["id"] for c in json.loads(results.read_text())["cases"]]
    except (OSError, ValueError):
        return []


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_run_saves_finished_cases_and_resume_completes_it(tmp_path: Path, sig: int) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(suite), "--out", str(out), "--quiet"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not finished_cases(out / "results.json") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert finished_cases(out / "results.json"), "no case finished in time"
    children = descendants(proc.pid)
    assert children, "a case process should be running"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130
    assert "continue with: bench run --resume" in err
    assert "Traceback" not in err
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    doc = json.loads((out / "results.json").read_text())
    assert doc["run"]["status"] == "interrupted"
    kept = [c["id"] for c in doc["cases"]]
    assert 1 <= len(kept) < 4
    assert all(c["status"] == "ok" for c in doc["cases"])

    resumed = subprocess.run([sys.executable, "-m", "bench", "run", "--resume", str(out), "--quiet"],
                             cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads((out / "results.json").read_text())
    assert final["run"]["status"] == "complete"
    assert len(final["run"]["resumed"]) == 1
    assert [c["id"] for c in final["cases"]][: len(kept)] == kept  # finished cases were not run again
    assert sorted(c["id"] for c in final["cases"]) == sorted(["sgd", "adam", "adamw", "rmsprop"])


def test_resume_refuses_a_folder_without_results(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bench", "run", "--resume", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "no such results file" in result.stderr


def test_an_unwritable_output_folder_is_an_error_before_any_case_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = subprocess.run([sys.executable, "-m", "bench", "run", "suites/smoke.yaml", "--out", str(blocker / "x")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot write results here" in result.stderr
    assert result.stderr.count("\n") == 1
