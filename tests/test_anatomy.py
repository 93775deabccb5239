"""The step anatomy: phases timed at the marks of the very step that was measured, accounting for
the whole step; checked with a fake clock, on a model whose phases sleep known times, and under
DDP with gloo at world size 2 (communication above zero, every rank's phases, the slowest named)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from conftest import bench

from bench.collectors import CaseContext
from bench.collectors.anatomy import (
    PHASES,
    AnatomyCollector,
    PhaseTimer,
    collective_spans,
    mean_phases,
    step_count,
    union_seconds,
)
from bench.records import ResultsDoc
from bench.suite import CaseParams
from bench.worker import build_step

TINY = ["--set", "measure.max_time=0.6", "--set", "measure.min_time=0.1", "--set", "measure.warmup_steps=2",
        "--set", "measure.min_rounds=2", "--set", "measure.trial_time=0.2", "--set", "measure.window_time=0.05"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_phase_lasts_from_the_previous_mark_and_the_gap_between_steps_is_other() -> None:
    clock = FakeClock()
    timer = PhaseTimer(clock)
    for _ in range(2):
        timer.start_step()
        for phase, seconds in (("optimizer", 0.001), ("data", 0.002), ("forward", 0.010), ("loss", 0.001),
                               ("backward", 0.020), ("optimizer", 0.004)):
            clock.now += seconds
            timer.mark(phase)
        clock.now += 0.003  # the loop between steps: no phase's
    timer.end()
    steps = timer.steps()
    assert steps[0][0] == pytest.approx({"data": 0.002, "forward": 0.010, "loss": 0.001, "backward": 0.020,
                                         "optimizer": 0.005})
    assert steps[0][1] == pytest.approx(0.041)
    means = mean_phases(steps)
    assert means["other_ms"] == pytest.approx(3.0)
    assert means["optimizer_ms"] == pytest.approx(5.0)
    assert means["step_ms"] == pytest.approx(41.0)


def test_the_mean_phases_add_up_to_the_mean_step_exactly() -> None:
    steps = [({"data": 0.001, "forward": 0.01 * i, "loss": 0.0, "backward": 0.02, "optimizer": 0.003}, 0.04 + 0.01 * i)
             for i in range(1, 6)]
    means = mean_phases(steps)
    assert sum(means[f"{p}_ms"] for p in PHASES) + means["other_ms"] == pytest.approx(means["step_ms"], abs=1e-9)
    assert means["step_ms"] == pytest.approx(1000 * sum(s[1] for s in steps) / 5)


def test_overlapping_collectives_count_once_in_the_time_in_flight() -> None:
    assert union_seconds([(0, 10), (5, 12), (20, 25), (21, 22)]) == 17
    assert union_seconds([]) == 0


def test_collective_spans_are_gloo_threads_on_a_cpu_and_nccl_kernels_on_a_gpu() -> None:
    def event(name: str, start: float, end: float, device: str) -> Any:
        return SimpleNamespace(name=name, device_type=f"DeviceType.{device}",
                               time_range=SimpleNamespace(start=start, end=end))

    events = [event("gloo:all_reduce", 0, 5, "CPU"), event("c10d::allreduce_", 0, 1, "CPU"),
              event("aten::mm", 1, 4, "CPU"), event("nccl:all_reduce", 2, 3, "CPU"),
              event("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 6, 9, "CUDA"), event("sgemm", 6, 7, "CUDA")]
    assert collective_spans(events, cuda=False) == [(0.0, 5.0), (2.0, 3.0)]
    assert collective_spans(events, cuda=True) == [(6.0, 9.0)]


def test_the_number_of_anatomy_steps_fills_half_a_second_within_bounds() -> None:
    assert step_count(0.05) == 10
    assert step_count(0.5) == 5       # at least five, however slow
    assert step_count(0.0001) == 50   # at most fifty, however fast


def params(**kwargs: Any) -> CaseParams:
    kwargs.setdefault("model", {"name": "mlp", "kwargs": {"hidden": 8}})
    kwargs.setdefault("batch_size", 4)
    return CaseParams.model_validate(kwargs)


def test_the_training_step_marks_each_phase_in_order_every_micro_batch() -> None:
    step, _ = build_step(params(grad_accum=2), torch.device("cpu"), 4)
    seen: list[str] = []
    step(seen.append)
    micro = ["data", "forward", "loss", "backward"]
    assert seen == ["optimizer", *micro, *micro, "optimizer"]


def test_a_step_that_cannot_be_phased_is_the_collectors_error_not_the_cases() -> None:
    ctx = CaseContext(params=params(), device=torch.device("cpu"), out_dir=None, case_id="c",
                      step=lambda: None)
    collector = AnatomyCollector(ctx)
    collector.after()
    record = collector.record()
    assert record["error"] == "no phased training step to time"
    assert record["phases"] is None


# --- end to end through `bench run` ------------------------------------------------------------

def run_suite(write_suite: Any, tmp_path: Path, text: str) -> ResultsDoc:
    suite = write_suite(textwrap.dedent(text))
    out = tmp_path / "out"
    result = bench("run", suite, "--out", out, "--no-report", *TINY, timeout=300)
    assert result.returncode == 0, result.stderr
    return ResultsDoc.model_validate(json.loads((out / "results.json").read_text()))


def test_the_phases_of_a_model_that_sleeps_known_times_account_for_the_measured_step(
        write_suite: Any, tmp_path: Path) -> None:
    doc = run_suite(write_suite, tmp_path, """
        name: paced
        defaults: {batch_size: 4, threads: 1}
        matrix:
          model: [{import: "usermodels:paced", input_shape: [3, 4, 4], kwargs: {forward_ms: 20, backward_ms: 30}}]
        """)
    anatomy = doc.cases[0].collectors.anatomy
    assert anatomy is not None and anatomy.error is None and anatomy.phases is not None
    phases = anatomy.phases
    # Sleeping takes no CPU, so a loaded machine stretches these by its scheduling delays only.
    assert 20 <= phases.forward_ms < 26
    assert 30 <= phases.backward_ms < 36
    assert anatomy.measured_step_ms is not None
    assert phases.step_ms == pytest.approx(anatomy.measured_step_ms, rel=0.1)
    parts = phases.data_ms + phases.forward_ms + phases.loss_ms + phases.backward_ms + phases.optimizer_ms
    assert parts + phases.other_ms == pytest.approx(phases.step_ms)
    assert anatomy.timing == "timestamps"
    assert anatomy.steps is not None and anatomy.steps >= 5
    assert anatomy.cost_s is not None and anatomy.cost_s > 0
    assert phases.communication_ms is None and anatomy.ranks is None


def test_ddp_at_world_size_two_has_communication_every_ranks_phases_and_the_slowest_rank(
        write_suite: Any, tmp_path: Path) -> None:
    doc = run_suite(write_suite, tmp_path, """
        name: ddp-anatomy
        defaults: {batch_size: 16, threads: 1, model: {name: mlp, kwargs: {hidden: 128}}}
        matrix:
          mode: [ddp]
          world_size: [2]
        """)
    case = doc.cases[0]
    assert case.status == "ok", case.error
    anatomy = case.collectors.anatomy
    assert anatomy is not None and anatomy.error is None and anatomy.phases is not None
    assert anatomy.ranks is not None and sorted(r.rank for r in anatomy.ranks) == [0, 1]
    slowest = max(anatomy.ranks, key=lambda r: r.step_ms)
    assert anatomy.slowest_rank == slowest.rank
    assert anatomy.phases.step_ms == slowest.step_ms
    for rank in anatomy.ranks:
        assert rank.communication_ms is not None and rank.communication_ms > 0
        assert rank.exposed_communication_ms is not None
        assert rank.backward_ms > 0 and rank.forward_ms > 0
