"""The runner on tiny budgets: each case in its own process; a case that raises, runs out of
memory, is killed or hangs is recorded as failed and the suite goes on; results.json is rewritten
atomically after every case; no process is left behind."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import psutil
import pytest

from bench import runner
from bench import suite as suite_mod
from bench.results import ResultsWriter, schema
from bench.suite import Case, Suite

TIMEOUT_S = 5

SUITE = """
name: runner
defaults:
  batch_size: 4
  measure: {{warmup_steps: 1, min_time: 0.1, max_time: 0.3, window_time: 0.01}}
  timeout: 60
matrix:
  model:
    - {{import: "usermodels:tiny", input_shape: [3, 4, 4]}}
    - {{import: "usermodels:raising", input_shape: [3, 4, 4]}}
    - {{import: "usermodels:raising_at_build", input_shape: [3, 4, 4]}}
    - {{import: "usermodels:out_of_memory", input_shape: [3, 4, 4]}}
    - {{import: "usermodels:killed", input_shape: [3, 4, 4]}}
    - {{import: "usermodels:sleeping", input_shape: [3, 4, 4], kwargs: {{pid_file: "{pid_file}"}}}}
include:
  # Extends the sleeping case (it fits its model) with a short timeout.
  - {{model: {{import: "usermodels:sleeping", input_shape: [3, 4, 4], kwargs: {{pid_file: "{pid_file}"}}}},
     timeout: {timeout}}}
  # Fits no case, so a case of its own, last: the suite goes on after every kind of failure.
  - {{model: {{import: "usermodels:tiny", input_shape: [3, 4, 4], num_classes: 5}}}}
"""


@dataclass
class Recorder:
    events: list[str] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)

    def suite_started(self, suite: Suite, out_dir: Path) -> None:
        self.events.append(f"suite {suite.name}")

    def case_started(self, case: Case) -> None:
        self.events.append(f"start {case.id}")

    def case_finished(self, case: Case, record: dict[str, Any]) -> None:
        self.events.append(f"finish {case.id} {record['status']}")

    def after_case(self, writer: ResultsWriter) -> None:
        # What a reader sees on disk right after each case: a complete, valid document.
        self.snapshots.append(json.loads(writer.path.read_text(encoding="utf-8")))


@dataclass
class RunnerRun:
    suite: Suite
    outcome: runner.RunOutcome
    recorder: Recorder
    pid_file: Path
    descendants_after: list[psutil.Process]

    def record(self, case_id: str) -> dict[str, Any]:
        return next(r for r in self.outcome.records if r["id"] == case_id)


@pytest.fixture(scope="module")
def runner_run(tmp_path_factory: pytest.TempPathFactory) -> RunnerRun:
    tmp = tmp_path_factory.mktemp("runner")
    pid_file = tmp / "sleeping.pids"
    path = tmp / "runner.yaml"
    path.write_text(SUITE.format(pid_file=pid_file, timeout=TIMEOUT_S), encoding="utf-8")
    s = suite_mod.load(path)
    recorder = Recorder()
    outcome = runner.run_suite(s, tmp / "out", argv=["bench", "run", str(path)], observer=recorder,
                               after_case=recorder.after_case)
    after = psutil.Process().children(recursive=True)
    return RunnerRun(s, outcome, recorder, pid_file, after)


def test_every_case_runs_in_order_and_the_suite_goes_on_after_failures(runner_run: RunnerRun) -> None:
    statuses = [(r["id"].split("_")[0].split("-")[0], r["status"]) for r in runner_run.outcome.records]
    assert statuses == [("tiny", "ok"), ("raising", "failed"), ("raising", "failed"),
                        ("out", "failed"), ("killed", "failed"), ("sleeping", "failed"), ("tiny", "ok")]
    assert runner_run.outcome.failed == 5
    assert runner_run.outcome.records[-1]["params"]["model"]["num_classes"] == 5
    ids = [c.id for c in runner_run.suite.cases]
    assert runner_run.recorder.events == ["suite runner"] + [
        e for case_id, r in zip(ids, runner_run.outcome.records, strict=True)
        for e in (f"start {case_id}", f"finish {case_id} {r['status']}")]


def test_a_good_case_is_ok_with_metrics(runner_run: RunnerRun) -> None:
    rec = runner_run.outcome.records[0]
    assert rec["status"] == "ok" and rec["error"] is None
    m = rec["metrics"]
    thr = m["throughput"]
    assert thr["median"] > 0
    if m["windows"] >= 2:  # a loaded machine can make one window outlast max_time
        assert thr["ci95"][0] <= thr["median"] <= thr["ci95"][1]
    assert 0 < m["step_time_ms"]["p50"] <= m["step_time_ms"]["p95"]
    assert m["peak_rss_mb"] > 10
    assert m["threads"] >= 1
    assert m["windows"] == len(rec["samples"]["window_s"]) >= 1
    assert m["steps"] == m["windows"] * m["steps_per_window"]
    assert m["stop_reason"] in ("target_ci", "max_time")
    assert rec["device"] == "cpu"
    assert rec["params"]["batch_size"] == 4
    # Throughput of each window is batch * steps / seconds.
    w0 = rec["samples"]["window_s"][0]
    assert rec["samples"]["window_throughput"][0] == pytest.approx(4 * m["steps_per_window"] / w0)


def test_a_model_that_raises_is_failed_with_its_error_and_traceback(runner_run: RunnerRun) -> None:
    rec = runner_run.outcome.records[1]
    assert rec["status"] == "failed"
    assert rec["error"] == "RuntimeError: boom from a user model"
    assert "usermodels.py" in rec["traceback"]
    assert rec["metrics"] is None
    build = runner_run.outcome.records[2]
    assert build["error"] == "ValueError: cannot build this model"


def test_out_of_memory_is_failed_and_named_as_such(runner_run: RunnerRun) -> None:
    rec = runner_run.outcome.records[3]
    assert rec["status"] == "failed"
    assert rec["error"] == "out of memory: CUDA out of memory. Tried to allocate 64.00 GiB"


def test_a_case_killed_by_sigkill_is_failed(runner_run: RunnerRun) -> None:
    rec = runner_run.outcome.records[4]
    assert rec["status"] == "failed"
    assert rec["error"] == "worker process was killed by SIGKILL"


def test_a_hanging_case_is_failed_as_timed_out(runner_run: RunnerRun) -> None:
    rec = runner_run.outcome.records[5]
    assert rec["params"]["timeout"] == TIMEOUT_S
    assert rec["status"] == "failed"
    assert rec["error"].startswith(f"timed out after {TIMEOUT_S} s")
    assert TIMEOUT_S <= rec["duration_s"] < TIMEOUT_S + 10


def test_a_timed_out_case_leaves_no_process_behind(runner_run: RunnerRun) -> None:
    case_pid, grandchild_pid = map(int, runner_run.pid_file.read_text(encoding="utf-8").split())
    for pid in (case_pid, grandchild_pid):
        try:
            status = psutil.Process(pid).status()
        except psutil.NoSuchProcess:
            continue
        assert status == psutil.STATUS_ZOMBIE, f"process {pid} is still {status}"
    # What may remain under the test process is multiprocessing's resource tracker, and the
    # forkserver, killed when the suite ended and left for multiprocessing to reap: a zombie, not
    # a running process. Never a case process.
    zombies = 0
    for proc in runner_run.descendants_after:
        assert proc.pid not in (case_pid, grandchild_pid)
        try:
            cmdline = " ".join(proc.cmdline())
        except psutil.ZombieProcess:
            zombies += 1
            continue
        except psutil.NoSuchProcess:
            continue
        assert "resource_tracker" in cmdline, cmdline
    assert zombies <= 1


def test_results_are_rewritten_after_every_case_and_valid_each_time(runner_run: RunnerRun) -> None:
    snaps = runner_run.recorder.snapshots
    assert [len(s["cases"]) for s in snaps] == list(range(1, 8))
    validator = jsonschema.Draft202012Validator(schema())
    for snap in snaps:
        assert snap["run"]["status"] == "running"
        assert list(validator.iter_errors(snap)) == []
    final = json.loads(runner_run.outcome.results_path.read_text(encoding="utf-8"))
    assert final["run"]["status"] == "complete"
    assert [c["status"] for c in final["cases"]] == [r["status"] for r in runner_run.outcome.records]
    assert list(validator.iter_errors(final)) == []
    # The atomic writer leaves no temporary files behind.
    assert not [p for p in os.listdir(runner_run.outcome.out_dir) if p.endswith(".tmp")]


def test_what_a_failing_case_printed_is_kept_in_its_log(runner_run: RunnerRun) -> None:
    ok, raising = runner_run.outcome.records[:2]
    assert ok["log"] is None  # it printed nothing, so no log is kept
    assert raising["log"] == f"logs/{raising['id']}.log"
    log = (runner_run.outcome.out_dir / raising["log"]).read_text(encoding="utf-8")
    assert "user model: about to raise" in log


REPEATS_SUITE = """
name: repeats
defaults:
  model: mlp
  batch_size: 16
  threads: 1
  repeats: 2
  profile: torch
  profiler: {wait: 0, warmup: 1, active: 1}
  measure: {warmup_steps: 2, min_time: 0.2, max_time: 0.4, window_time: 0.02}
  timeout: 120
matrix:
  optimizer: [sgd]
"""


def test_repeats_pool_every_processs_windows_and_keep_each_processs_median(tmp_path: Path) -> None:
    path = tmp_path / "repeats.yaml"
    path.write_text(REPEATS_SUITE, encoding="utf-8")
    outcome = runner.run_suite(suite_mod.load(path), tmp_path / "out", argv=["bench", "run", str(path)])
    (record,) = outcome.records
    assert record["status"] == "ok", record["error"]
    metrics, samples = record["metrics"], record["samples"]
    assert metrics["repeats"] == 2
    assert len(metrics["throughput"]["per_repeat"]) == 2
    assert sorted(set(samples["window_repeat"])) == [0, 1]
    assert metrics["windows"] == len(samples["window_s"]) == len(samples["window_throughput"])
    # One process profiled, and the files on disk are the ones its record names.
    traces = record["collectors"]["torch_profiler"]["traces"]
    assert traces == [f"profiles/{record['id']}/rank0.pt.trace.json.gz"]
    assert sorted(p.name for p in (tmp_path / "out" / "profiles").rglob("*") if p.is_file()) == ["rank0.pt.trace.json.gz"]


def test_only_the_first_repeat_runs_the_profilers(tmp_path: Path) -> None:
    path = tmp_path / "repeats.yaml"
    path.write_text(REPEATS_SUITE.replace("repeats: 2", "repeats: 3"), encoding="utf-8")
    (case,) = suite_mod.load(path).cases
    seen: list[tuple[str, ...]] = []

    class Launcher:
        def run_case(self, case: Case, out_dir: Path | None, log_path: Path) -> dict[str, Any]:
            seen.append(tuple(case.params.profile))
            return {"status": "failed", "error": "not run"}

    runner._run_one(Launcher(), case, tmp_path, tmp_path / "log", runner.Cluster(), {})  # type: ignore[arg-type]
    assert seen == [("torch",), (), ()]
