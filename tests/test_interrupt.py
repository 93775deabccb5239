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
  measure: {warmup_steps: 1, min_time: 1.5, max_time: 2.0, target_ci: 0.0001, trial_time: 0.2, window_time: 0.02}
  timeout: 60
matrix:
  optimizer: [sgd, adam, adamw, rmsprop]
"""


def rounds_done(results: Path) -> int:
    try:
        return int((json.loads(results.read_text())["rounds"] or {}).get("completed", 0))
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_round_saves_every_trial_and_resume_goes_on_with_the_rounds(tmp_path: Path, sig: int) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", str(suite), "--out", str(out), "--quiet",
                             "--order-seed", "7"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while rounds_done(out / "results.json") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rounds_done(out / "results.json") >= 2, "no round finished in time"
    children = descendants(proc.pid)
    assert children, "case processes should be running"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130
    assert "continue with: bench run --resume" in err
    assert "Traceback" not in err
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    doc = json.loads((out / "results.json").read_text())
    assert doc["run"]["status"] == "interrupted"
    assert doc["rounds"]["seed"] == 7
    before = {c["id"]: [t["median"] for t in c["trials"]] for c in doc["cases"]}
    assert sorted(before) == ["adam", "adamw", "rmsprop", "sgd"]
    assert all(len(trials) >= 2 for trials in before.values())
    assert all(c["metrics"]["stop_reason"] is None for c in doc["cases"])  # none had finished

    resumed = subprocess.run([sys.executable, "-m", "bench", "run", "--resume", str(out), "--quiet"],
                             cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads((out / "results.json").read_text())
    assert final["run"]["status"] == "complete"
    assert len(final["run"]["resumed"]) == 1
    assert final["rounds"]["seed"] == 7 and final["rounds"]["completed"] > doc["rounds"]["completed"]
    assert [c["id"] for c in final["cases"]] == ["sgd", "adam", "adamw", "rmsprop"]
    for case in final["cases"]:
        trials = [t["median"] for t in case["trials"]]
        # The trials measured before the interruption are kept, and the rounds went on after them.
        assert trials[: len(before[case["id"]])] == before[case["id"]]
        assert len(trials) > len(before[case["id"]])
        assert case["metrics"]["stop_reason"] in ("max_time", "target_ci")


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
