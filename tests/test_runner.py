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
from bench.records import CaseRecord, json_schema
from bench.results import ResultsWriter
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

    def case_finished(self, case: Case, record: CaseRecord) -> None:
        self.events.append(f"finish {case.id} {record.status}")

    def trial_finished(self, case: Case, trials: int) -> None:
        self.events.append(f"trial {case.id} {trials}")

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

    def record(self, case_id: str) -> CaseRecord:
        return next(r for r in self.outcome.records if r.id == case_id)


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


def test_every_case_runs_and_the_suite_goes_on_after_failures(runner_run: RunnerRun) -> None:
    statuses = [(r.id.split("_")[0].split("-")[0], r.status) for r in runner_run.outcome.records]
    assert statuses == [("tiny", "ok"), ("raising", "failed"), ("raising", "failed"),
                        ("out", "failed"), ("killed", "failed"), ("sleeping", "failed"), ("tiny", "ok")]
    assert runner_run.outcome.failed == 5
    assert runner_run.outcome.records[-1].params.model["num_classes"] == 5
    ids = [c.id for c in runner_run.suite.cases]
    events = runner_run.recorder.events
    assert events[0] == "suite runner"
    # Every case starts (in suite order: they are built before the rounds) and finishes once.
    assert [e.split()[1] for e in events if e.startswith("start ")] == ids
    for case_id, r in zip(ids, runner_run.outcome.records, strict=True):
        assert events.count(f"finish {case_id} {r.status}") == 1
        assert events.index(f"start {case_id}") < events.index(f"finish {case_id} {r.status}")


def test_cases_take_turns_in_randomized_rounds_that_the_results_record(runner_run: RunnerRun) -> None:
    doc = json.loads(runner_run.outcome.results_path.read_text(encoding="utf-8"))
    rounds = doc["rounds"]
    ok = [r.id for r in runner_run.outcome.records if r.status == "ok"]
    assert rounds["completed"] == len(rounds["orders"]) >= 7  # min_rounds 6, plus the collector round
    # The two cases that measure share every round with the machine-speed reference, in an order
    # that varies between rounds.
    assert all(sorted(order) == sorted([*ok, "(reference)"]) for order in rounds["orders"])
    assert len({tuple(order) for order in rounds["orders"]}) > 1
    reference = rounds["reference"]
    assert reference["error"] is None
    # The reference process said nothing: no empty log left beside the cases'.
    assert not (runner_run.outcome.out_dir / "logs" / "reference.log").exists()
    assert [t["round"] for t in reference["trials"]] == list(range(rounds["completed"]))
    for record in runner_run.outcome.records:
        if record.status != "ok":
            continue
        assert record.trials is not None
        assert [t.round for t in record.trials] == list(range(rounds["completed"]))
        assert all(rounds["orders"][t.round][t.position] == record.id for t in record.trials)
        # Each trial of these CPU cases knows the reference measured in its own process right after
        # it (a companion, not the round's reference process); the case's relative throughput is
        # the median of its trials over those.
        by_round = {t["round"]: t["median"] for t in reference["trials"]}
        assert all(t.reference_source == "case" and t.reference is not None for t in record.trials)
        assert [t.reference for t in record.trials] != [by_round[t.round] for t in record.trials]
        assert record.metrics is not None and record.metrics.relative is not None
        assert record.metrics.relative.source == "case"
        ratios = sorted(t.median / t.reference for t in record.trials if t.reference is not None)
        assert ratios[0] <= record.metrics.relative.median <= ratios[-1]
        assert record.metrics is not None and record.metrics.trials == len(record.trials)
    # A case whose process died in a trial took no more turns.
    raising = runner_run.outcome.records[1]
    assert raising.trials is None and raising.id not in {i for order in rounds["orders"] for i in order}


def test_a_good_case_is_ok_with_metrics(runner_run: RunnerRun) -> None:
    rec = runner_run.outcome.records[0]
    assert rec.status == "ok" and rec.error is None
    m = rec.metrics
    thr = m.throughput
    assert thr.median > 0
    if m.windows >= 2:  # a loaded machine can make one window outlast max_time
        assert thr.ci95[0] <= thr.median <= thr.ci95[1]
    assert 0 < m.step_time_ms.p50 <= m.step_time_ms.p95
    assert m.peak_rss_mb > 10
    assert m.threads >= 1
    assert m.windows == len(rec.samples.window_s) >= 1
    assert m.steps == m.windows * m.steps_per_window
    assert m.stop_reason in ("target_ci", "max_time")
    assert rec.device == "cpu"
    assert rec.params.batch_size == 4
    # Throughput of each window is batch * steps / seconds.
    w0 = rec.samples.window_s[0]
    assert rec.samples.window_throughput[0] == pytest.approx(4 * m.steps_per_window / w0)


def test_a_model_that_raises_is_failed_with_its_error_and_traceback(runner_run: RunnerRun) -> None:
    rec = runner_run.outcome.records[1]
    assert rec.status == "failed"
    assert rec.error == "RuntimeError: boom from a user model"
    assert "usermodels.py" in rec.traceback
    assert rec.metrics is None
    build = runner_run.outcome.records[2]
    assert build.error == "ValueError: cannot build this model"


def test_out_of_memory_is_failed_and_named_as_such(runner_run: RunnerRun) -> None:
    rec = runner_run.outcome.records[3]
    assert rec.status == "failed"
    assert rec.error == "out of memory: CUDA out of memory. Tried to allocate 64.00 GiB"


def test_a_case_killed_by_sigkill_is_failed(runner_run: RunnerRun) -> None:
    rec = runner_run.outcome.records[4]
    assert rec.status == "failed"
    assert rec.error == "worker process was killed by SIGKILL"


def test_a_hanging_case_is_failed_as_timed_out(runner_run: RunnerRun) -> None:
    rec = runner_run.outcome.records[5]
    assert rec.params.timeout == TIMEOUT_S
    assert rec.status == "failed"
    assert rec.error.startswith(f"timed out after {TIMEOUT_S} s")
    assert TIMEOUT_S <= rec.duration_s < TIMEOUT_S + 10


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
    # One snapshot as each case finished: by then that many cases are final in the file.
    final_counts = [sum(c["status"] != "ok" or c["metrics"]["stop_reason"] is not None for c in s["cases"])
                    for s in snaps]
    assert final_counts == list(range(1, 8))
    validator = jsonschema.Draft202012Validator(json_schema())
    for snap in snaps:
        assert snap["run"]["status"] == "running"
        assert list(validator.iter_errors(snap)) == []
    final = json.loads(runner_run.outcome.results_path.read_text(encoding="utf-8"))
    assert final["run"]["status"] == "complete"
    assert [c["status"] for c in final["cases"]] == [r.status for r in runner_run.outcome.records]
    assert list(validator.iter_errors(final)) == []
    # The atomic writer leaves no temporary files behind.
    assert not [p for p in os.listdir(runner_run.outcome.out_dir) if p.endswith(".tmp")]


def test_what_a_failing_case_printed_is_kept_in_its_log(runner_run: RunnerRun) -> None:
    ok, raising = runner_run.outcome.records[:2]
    assert ok.log is None  # it printed nothing, so no log is kept
    assert raising.log == f"logs/{raising.id}.log"
    log = (runner_run.outcome.out_dir / raising.log).read_text(encoding="utf-8")
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


def test_repeats_take_turns_between_processes_and_only_the_first_profiles(tmp_path: Path) -> None:
    path = tmp_path / "repeats.yaml"
    path.write_text(REPEATS_SUITE, encoding="utf-8")
    outcome = runner.run_suite(suite_mod.load(path), tmp_path / "out", argv=["bench", "run", str(path)])
    (record,) = outcome.records
    assert record.status == "ok", record.error
    metrics, samples = record.metrics, record.samples
    assert metrics is not None and samples is not None and record.trials is not None
    assert metrics.repeats == 2
    # Rounds alternate between the two processes, so the interval covers a process-level effect too;
    # the collector round (the last) is the first process's.
    assert [t.repeat for t in record.trials[:-1]] == [t.round % 2 for t in record.trials[:-1]]
    assert record.trials[-1].repeat == 0
    assert metrics.windows == len(samples.window_s) == len(samples.window_throughput)
    # One process profiled, and the files on disk are the ones its record names.
    assert record.collectors.torch_profiler is not None
    traces = record.collectors.torch_profiler.traces
    assert traces == [f"profiles/{record.id}/rank0.pt.trace.json.gz"]
    assert sorted(p.name for p in (tmp_path / "out" / "profiles").rglob("*") if p.is_file()) == ["rank0.pt.trace.json.gz"]


PROFILED_CRASH_SUITE = """
name: profiled-crash
defaults:
  model: {import: "usermodels:killed_when_profiled", input_shape: [3, 4, 4]}
  batch_size: 4
  threads: 1
  profile: torch
  profiler: {wait: 0, warmup: 1, active: 1}
  measure: {warmup_steps: 1, min_time: 0.1, max_time: 0.3, window_time: 0.01}
  timeout: 60
matrix:
  optimizer: [sgd]
"""


def test_a_process_that_dies_in_the_collectors_work_after_its_trials_keeps_its_measurement(tmp_path: Path) -> None:
    path = tmp_path / "crash.yaml"
    path.write_text(PROFILED_CRASH_SUITE, encoding="utf-8")
    outcome = runner.run_suite(suite_mod.load(path), tmp_path / "out", argv=["bench", "run", str(path)])
    (record,) = outcome.records
    # Killed under the profiler, after every trial was measured: the trials stand, the profile is
    # missing, and the record says so.
    assert record.status == "ok" and record.error is None
    assert record.trials is not None and len(record.trials) >= 6
    assert record.metrics is not None and record.metrics.throughput.median > 0
    assert record.collectors.torch_profiler is None
    (warning,) = [w for w in record.warnings if "collectors' work after the last trial failed" in w]
    assert "SIGKILL" in warning
